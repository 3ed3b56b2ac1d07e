//! `cargo +nightly fuzz run check`: parse, check, render and format arbitrary text; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let checked = ahtsgd::check::check_text("fuzz.aht", text, &Default::default());
        let _ = ahtsgd::diagnostic::render(&checked.diagnostics, &checked.sources, false);
        if let Ok(module) = ahtsgd::syntax::parse(ahtsgd::source::FileId(0), text) {
            let _ = ahtsgd::fmt::format(&module, text);
        }
    }
});
