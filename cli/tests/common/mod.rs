//! Helpers shared by the CLI test binaries: run the built `pixmim`, read its output.
#![allow(dead_code)] // each test binary uses a different subset
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `pixmim ARGS` from the cli crate's folder.
pub fn pixmim(args: &[&str]) -> Output {
    command().args(args).output().expect("run pixmim")
}

pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pixmim"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run and require success; the combined output.
pub fn ok(args: &[&str]) -> String {
    let o = pixmim(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    text(&o)
}

/// `pixmim train --method mae --preset tiny --steps STEPS --out OUT EXTRA...`: the short
/// training run many tests start from.
pub fn train_tiny(out: &Path, steps: usize, extra: &[&str]) -> Output {
    let args = train_tiny_args(out, steps, extra);
    pixmim(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The arguments of [`train_tiny`].
pub fn train_tiny_args(out: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    let steps = steps.to_string();
    let out = out.to_str().expect("utf-8 temp path");
    [
        "train", "--method", "mae", "--preset", "tiny", "--steps", &steps, "--out", out,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// A fresh (removed) temporary path, unique to this process.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pixmim-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
