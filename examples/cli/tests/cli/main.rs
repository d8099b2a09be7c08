//! Integration tests of the `moetile` binary, driven as a user would (assert_cmd), on a tiny
//! synthetic model: most on the CPU reference (`--cpu`, fast and exact), the GPU paths in
//! `gpu.rs` and `embed.rs` (the embedding example against `run`) on whatever adapter exists
//! (lavapipe in CI).
//!
//! The shared model's seed is fresh each run and printed, so a failure reproduces with
//! `MOETILE_TEST_SEED=<seed>`.

mod bench;
mod chat;
mod embed;
mod errors;
mod gpu;
mod prompt_ids;
mod run;
mod serve;
mod synth;
mod tune;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;

/// The binary, with a clean environment for the settings it reads, and a cache folder of the
/// tests' own (so no tuning record of the user's changes a test's tile cap).
pub fn moetile() -> Command {
    Command::from_std(moetile_std())
}

/// [`moetile`] as a plain process, for a test that talks to it while it runs (`serve`).
pub fn moetile_std() -> std::process::Command {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().unwrap());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_moetile"));
    cmd.env_remove("MOETILE_TILE_MAX");
    cmd.env("XDG_CACHE_HOME", cache.path());
    cmd
}

/// A tiny-qwen3moe (Q8_0, 2 layers) shared by the tests of this binary.
pub fn tiny_model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let model = moetile_tests::tiny_model(moetile_tests::seed("tiny model"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        std::fs::write(&path, model).unwrap();
        (dir, path)
    });
    path
}

/// The model path as an argument.
pub fn model_arg() -> &'static str {
    tiny_model()
        .to_str()
        .expect("temporary paths are UTF-8 here")
}

/// Asserts a failure reported as exactly one `error:` line, with no panic or backtrace, and
/// returns that line.
pub fn one_line_error(cmd: &mut Command) -> String {
    let out = cmd.env("RUST_BACKTRACE", "1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    lines[0].to_string()
}

/// Stdout of a successful run.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
