//! `file://` URIs against paths: percent-encoded bytes decoded, and encoded where a path has
//! characters a URI cannot hold. Documents that are not files (`untitled:`) have no path.

use lsp_types::Uri;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The path of a `file:` URI (`None` for any other scheme, or a URI naming another host).
pub fn path_of(uri: &Uri) -> Option<PathBuf> {
    let rest = uri.as_str().strip_prefix("file://")?;
    // `file:///p` (no host) or `file://localhost/p`
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return None;
    }
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = rest.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
    }
    #[cfg(not(unix))]
    {
        Some(PathBuf::from(String::from_utf8(out).ok()?))
    }
}

/// The `file://` URI of an absolute path.
pub fn uri_of(path: &Path) -> Option<Uri> {
    let mut s = String::from("file://");
    for &b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    Uri::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_spaces_and_non_ascii_go_there_and_back() {
        let p = Path::new("/tmp/my recipes/α-test.aht");
        let uri = uri_of(p).unwrap();
        assert_eq!(uri.as_str(), "file:///tmp/my%20recipes/%CE%B1-test.aht");
        assert_eq!(path_of(&uri).unwrap(), p);
        let untitled = Uri::from_str("untitled:Untitled-1").unwrap();
        assert_eq!(path_of(&untitled), None);
        let local = Uri::from_str("file://localhost/etc/x.aht").unwrap();
        assert_eq!(path_of(&local).unwrap(), Path::new("/etc/x.aht"));
    }
}
