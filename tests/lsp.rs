//! `ahtsgd lsp` driven through the protocol as an editor drives it: the spawned server over
//! standard input and output, messages framed with `Content-Length`. Opens a broken recipe
//! that imports a broken file, checks the published diagnostics and their ranges (UTF-16
//! columns after non-ASCII text), hover, completion, symbols, formatting, definition,
//! references and rename across the import, fixes the document and sees the diagnostics
//! cleared, hovers a value (each trial's, now that it checks), sends positions past the end
//! and a document that is no file, then shuts the server down.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

struct Client {
    child: Child,
    stdin: ChildStdin,
    messages: Receiver<Value>,
    next_id: u64,
    /// Notifications seen while waiting for something else.
    pending: Vec<Value>,
}

fn read_message(out: &mut BufReader<ChildStdout>) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("Content-Length:") {
            length = n.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    out.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
            .args(["lsp", "--stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, messages) = channel();
        std::thread::spawn(move || {
            while let Some(m) = read_message(&mut stdout) {
                if send.send(m).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            stdin,
            messages,
            next_id: 1,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, msg: Value) {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn next(&mut self) -> Value {
        self.messages
            .recv_timeout(Duration::from_secs(30))
            .expect("the server answers within 30 s")
    }

    /// Sends a request and returns its response (notifications meanwhile are kept).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let m = self.next();
            if m["id"] == id {
                return m;
            }
            self.pending.push(m);
        }
    }

    /// The next diagnostics published for `uri`.
    fn diagnostics_for(&mut self, uri: &str) -> Vec<Value> {
        if let Some(i) = self.pending.iter().position(|m| {
            m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri
        }) {
            let m = self.pending.remove(i);
            return m["params"]["diagnostics"].as_array().unwrap().clone();
        }
        loop {
            let m = self.next();
            if m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri {
                return m["params"]["diagnostics"].as_array().unwrap().clone();
            }
            self.pending.push(m);
        }
    }
}

fn at(line: u32, character: u32) -> Value {
    json!({"line": line, "character": character})
}

fn file_uri(p: &std::path::Path) -> String {
    format!("file://{}", p.display())
}

#[test]
fn an_editor_session_through_the_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("shared.aht"),
        "model net = mlp { hidden = [8], activaton = relu }\n",
    )
    .unwrap();
    let main = tmp.path().join("main.aht");
    // line 2: the typo `shap` after a string of non-ASCII characters: é is one UTF-16 unit,
    // 𝛼 two, so `shap` starts at UTF-16 column 39 (byte 42)
    let text = "import \"shared.aht\"\n\
dataset d = blobs { classes = 3 }\n\
dataset a = arrays { path = \"é𝛼.npz\", shap = [2] }\n\
optimizer plain = sgd { lr = 0.1 }\n\
experiment e {\n  data = d\n  model = net\n  optimizer = plain\n  epochs = 1\n}\n";
    let uri = file_uri(&main);
    let shared = file_uri(&tmp.path().join("shared.aht"));

    let mut c = Client::start();
    let init = c.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["hoverProvider"], true, "{init}");
    assert_eq!(caps["documentFormattingProvider"], true);
    c.notify("initialized", json!({}));
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "aht", "version": 1, "text": text}}),
    );

    let diags = c.diagnostics_for(&uri);
    let typo = diags
        .iter()
        .find(|d| d["code"] == "aht::check::unknown_field")
        .unwrap_or_else(|| panic!("{diags:#?}"));
    let line2 = text.lines().nth(2).unwrap();
    let byte = line2.find("shap").unwrap();
    let utf16: usize = line2[..byte].chars().map(char::len_utf16).sum();
    assert_eq!((byte, utf16), (42, 39));
    assert_eq!(typo["range"]["start"], at(2, 39), "{typo}");
    assert_eq!(typo["range"]["end"], at(2, 43), "{typo}");
    assert_eq!(typo["severity"], 1);
    assert_eq!(typo["source"], "ahtsgd");
    assert!(
        typo["message"].as_str().unwrap().contains("shape"),
        "did you mean: {typo}"
    );
    // the imported file's mistake is published under its own URI
    let imported = c.diagnostics_for(&shared);
    assert!(
        imported
            .iter()
            .any(|d| d["code"] == "aht::check::unknown_field" && d["range"]["start"] == at(0, 32)),
        "{imported:#?}"
    );

    // hover: a kind, a field, a declared name
    let hover = |c: &mut Client, pos: Value| {
        c.request(
            "textDocument/hover",
            json!({"textDocument": {"uri": uri}, "position": pos}),
        )["result"]
            .clone()
    };
    for (pos, says) in [
        (at(1, 14), "**blobs**"),
        (at(3, 25), "field of `sgd`"),
        (at(5, 10), "dataset d = blobs"),
    ] {
        let h = hover(&mut c, pos);
        let text = h["contents"]["value"].as_str().unwrap_or_default();
        assert!(text.contains(says), "{says}: {h}");
    }
    // positions past the end of a line and of the document are no error
    assert!(hover(&mut c, at(2, 500)).is_null());
    assert!(hover(&mut c, at(900, 3)).is_null());

    // completion of the fields of the block under the cursor
    let items = c.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": at(1, 20)}),
    )["result"]
        .clone();
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"classes") && labels.contains(&"spread"),
        "{labels:?}"
    );

    let symbols = c.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": uri}}),
    )["result"]
        .clone();
    let names: Vec<&str> = symbols
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d", "a", "plain", "e"]);
    let edits = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    )["result"]
        .clone();
    assert!(edits.is_null() || edits.as_array().is_some(), "{edits}");

    // the did-you-mean as a quick fix
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri}, "range": {"start": at(2, 0), "end": at(2, 60)},
               "context": {"diagnostics": []}}),
    )["result"]
        .clone();
    let fix = &actions[0];
    assert_eq!(fix["title"], "Change `shap` to `shape`", "{actions}");
    assert_eq!(fix["edit"]["changes"][&uri][0]["range"]["start"], at(2, 39));

    // definition, references and rename across the import: `net` is declared in shared.aht
    let pos = json!({"textDocument": {"uri": uri}, "position": at(6, 11)});
    let def = c.request("textDocument/definition", pos.clone())["result"].clone();
    assert_eq!(def["uri"], shared.as_str(), "{def}");
    assert_eq!(def["range"]["start"], at(0, 6));
    let mut with_decl = pos.clone();
    with_decl["context"] = json!({"includeDeclaration": true});
    let refs = c.request("textDocument/references", with_decl)["result"].clone();
    let mut found: Vec<(String, Value)> = refs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["uri"].as_str().unwrap().to_string(),
                l["range"]["start"].clone(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        [(uri.clone(), at(6, 10)), (shared.clone(), at(0, 6))],
        "{refs}"
    );
    let prepared = c.request("textDocument/prepareRename", pos.clone())["result"].clone();
    assert_eq!(prepared["start"], at(6, 10), "{prepared}");
    let mut renaming = pos.clone();
    renaming["newName"] = json!("small");
    let edit = c.request("textDocument/rename", renaming.clone())["result"].clone();
    let changes = edit["changes"].as_object().unwrap();
    assert_eq!(changes[&uri][0]["newText"], "small", "{edit}");
    assert_eq!(changes[&shared][0]["range"]["start"], at(0, 6), "{edit}");
    renaming["newName"] = json!("plain");
    let refused = c.request("textDocument/rename", renaming);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declared already"),
        "{refused}"
    );

    // the fix: the typo and the import go; both files' diagnostics are cleared
    let fixed = text.replace("shap =", "shape =").replace(
        "import \"shared.aht\"\n",
        "model net = mlp { hidden = [8] }\n",
    );
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": fixed}]}),
    );
    let now = c.diagnostics_for(&uri);
    assert!(now.is_empty(), "{now:#?}");
    assert!(c.diagnostics_for(&shared).is_empty());
    // now that it checks, a value's hover gives it in each trial, from the checked plan
    let h = hover(&mut c, at(3, 30));
    assert_eq!(
        h["contents"]["value"], "**`lr`** in each trial:\n- `0.1`: trial 0 of `e`",
        "{h}"
    );

    // a document that is no file, with non-ASCII text, and a request on one never opened
    let untitled = "untitled:Untitled-1";
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": untitled, "languageId": "aht", "version": 1, "text": "# α\nmodel = {"}}),
    );
    let broken = c.diagnostics_for(untitled);
    assert_eq!(broken[0]["code"], "aht::parse::syntax", "{broken:#?}");
    let none = c.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": "file:///nowhere.aht"}, "position": at(3, 3)}),
    );
    assert!(
        none["result"].is_null() && none.get("error").is_none(),
        "{none}"
    );

    let down = c.request("shutdown", Value::Null);
    assert!(down.get("error").is_none(), "{down}");
    // asked again (Neovim 0.7 does), the server answers with an error and still waits for exit
    let again = c.request("shutdown", Value::Null);
    assert!(again.get("error").is_some(), "{again}");
    c.notify("exit", Value::Null);
    let status = c.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut err = String::new();
    c.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
}
