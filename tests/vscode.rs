//! The VS Code extension in `editors/vscode`, under Node: its TextMate grammar through
//! vscode-textmate and vscode-oniguruma (the tokenizer VS Code runs) on every recipe, and
//! the command it starts, in a session through vscode-jsonrpc with this build's `ahtsgd lsp`.
//! The scripts are `editors/vscode/test/*.test.js`. Without Node or `npm ci` in that folder
//! the test is skipped, unless `CI` is set (then `.ci/run` has installed them, and their
//! absence is a failure).

use std::path::Path;
use std::process::Command;

fn run_script(script: &str) {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("editors/vscode");
    let ready = folder.join("node_modules/vscode-textmate").is_dir()
        && Command::new("node").arg("--version").output().is_ok();
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "node or editors/vscode/node_modules is missing (.ci/run installs them with npm ci)"
        );
        eprintln!("skipped: run `npm ci` in editors/vscode (needs Node)");
        return;
    }
    let out = Command::new("node")
        .arg(script)
        .current_dir(&folder)
        .env("AHTSGD", env!("CARGO_BIN_EXE_ahtsgd"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node {script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn textmate_grammar_scopes_every_recipe() {
    run_script("test/grammar.test.js");
}

#[test]
fn extension_starts_the_language_server() {
    run_script("test/server.test.js");
}
