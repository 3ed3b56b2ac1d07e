//! Neovim's built-in LSP client (Debian's `neovim`, 0.7) opens `recipes/quickstart.aht` with a
//! typo and shows the checker's diagnostic at the typo; a hover comes back from the schema. The
//! Lua side is `tests/neovim/diagnostics.lua`. Without `nvim` the test is skipped, unless `CI`
//! is set (then `.ci/run` has installed it, and its absence is a failure).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn neovim_shows_the_checkers_diagnostic_at_the_typo() {
    if Command::new("nvim").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nvim is not installed (.ci/run installs Debian's neovim)"
        );
        eprintln!("skipped: nvim is not installed");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(root.join("recipes/quickstart.aht")).unwrap();
    // the typo sits after non-ASCII text on its line, so the column the client shows depends
    // on the server counting UTF-16 units as the protocol says
    let text = original.replacen(
        "model mlp = mlp { hidden = [256, 256]",
        "model mlp = mlp { name = \"é𝛼\", hiden = [256, 256]",
        1,
    );
    assert_ne!(text, original, "the quickstart's model line moved");
    let recipe = tmp.path().join("quickstart.aht");
    std::fs::write(&recipe, &text).unwrap();
    let line = text.lines().position(|l| l.contains("hiden")).unwrap();
    let byte = text.lines().nth(line).unwrap().find("hiden").unwrap();
    let hover_line = text
        .lines()
        .position(|l| l.contains("sigma = 0.01"))
        .unwrap();
    let out = tmp.path().join("out.txt");
    let mut child = Command::new("nvim")
        .args(["--headless", "-u", "NONE", "-i", "NONE", "-n", "-c"])
        .arg(format!(
            "luafile {}",
            root.join("tests/neovim/diagnostics.lua").display()
        ))
        .env("AHTSGD", env!("CARGO_BIN_EXE_ahtsgd"))
        .env("RECIPE", &recipe)
        .env("OUT", &out)
        .env("HOVER_LINE", hover_line.to_string())
        .env("HOVER_CHARACTER", "4")
        .current_dir(tmp.path())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("nvim did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    let diags: Vec<&str> = said.lines().filter(|l| l.starts_with("diag ")).collect();
    assert!(!said.contains("error "), "{said}");
    let typo = diags
        .iter()
        .find(|l| l.contains("aht::check::unknown_field") && l.contains("hiden"))
        .unwrap_or_else(|| panic!("no diagnostic for the typo:\n{said}"));
    // `diag LINE COL END_LINE END_COL ...`, columns in bytes as Neovim keeps them
    let want = format!("diag {line} {byte} {line} {} ", byte + "hiden".len());
    assert!(typo.starts_with(&want), "{typo} (want {want})");
    assert!(typo.contains("did you mean `hidden`?"), "{typo}");
    let hover = said
        .lines()
        .find(|l| l.starts_with("hover "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(hover.contains("field of `ahtsgd`"), "{hover}");
}
