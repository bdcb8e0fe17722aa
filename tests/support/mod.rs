//! What the end-to-end tests of `soft-train` share: running the built binary, scratch
//! directories, a small `tiny` model, and reading JSON outputs.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_soft-train"))
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("soft-train runs")
}

/// A fresh, empty directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("soft-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn books_items() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/amazon-books/id2name.json")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small `tiny` model (3 pre-training steps, 600-token vocabulary) in `dir/tiny`.
pub fn small_tiny(dir: &Path) -> PathBuf {
    let model = dir.join("tiny");
    let o = run(&[
        "pretrain",
        "--steps",
        "3",
        "--vocab-size",
        "600",
        "--ppl-titles",
        "20",
        "--out",
        model.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    model
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `soft-train run` on a tiny slice (8 / 4 / 6 examples, 2 epochs, 8-token answers, CPU): every
/// stage in well under a minute.
pub fn tiny_run_args(model: &Path, out: &Path) -> Vec<String> {
    [
        "run",
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--train-size",
        "8",
        "--valid-size",
        "4",
        "--test-size",
        "6",
        "--epochs",
        "2",
        "--d-samples",
        "4",
        "--max-new-tokens",
        "8",
        "--sasrec-epochs",
        "1",
        "--sasrec-train-on",
        "sample",
        "--backend",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
