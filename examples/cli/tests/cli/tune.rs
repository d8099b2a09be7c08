//! `moetile tune` end to end on the tiny model, with a cache folder of the test's own: the
//! record it keeps, the cap later runs take from it (and say so) unless a cap is set, and a
//! corrupt record ignored with a warning. Skipped without an adapter unless
//! `MOETILE_REQUIRE_GPU=1`.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::gpu::devices;
use crate::{model_arg, moetile};

/// `moetile` with `cache` as `XDG_CACHE_HOME`, run with `args`.
fn run_in(cache: &Path, args: &[&str]) -> Output {
    moetile()
        .env("XDG_CACHE_HOME", cache)
        .args(args)
        .output()
        .unwrap()
}

/// `moetile run --json` of one token in `cache`: (settings, stderr).
fn run_json(cache: &Path, extra: &[&str]) -> (Value, String) {
    let mut args = vec!["run", "-m", model_arg(), "-p", "Once", "-n", "1", "--json"];
    args.extend(extra);
    let out = run_in(cache, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    (report["settings"].clone(), stderr)
}

#[test]
fn tune_keeps_a_cap_that_later_runs_use_and_say_so() {
    if devices().is_none() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let folder = cache.path().join("moetile");
    std::fs::create_dir_all(&folder).unwrap();
    let mine = folder.join("notes.txt");
    std::fs::write(&mine, "the user's own file").unwrap();

    let args = ["tune", "-m", model_arg(), "--tokens", "128", "--iters", "1"];
    let out = run_in(cache.path(), &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tiny model (Q8_0): gate and up interleaved (2F = 512 rows), down (D = 256 rows).
    for row in [
        "| gate_up Q8_0 512x256 f32 (E 16, K 2) | 2 | reg |",
        "| down Q8_0 256x256 ",
    ] {
        assert!(stdout.contains(row), "{row}: {stdout}");
    }
    let cap: usize = stdout
        .split("tile cap for this model on this adapter (")
        .nth(1)
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cap in {stdout}"));
    let record: Value =
        serde_json::from_slice(&std::fs::read(folder.join("tuning.json")).unwrap()).unwrap();
    assert_eq!(record["version"], 1);
    assert!(record["entries"].as_array().unwrap().len() >= 2, "{record}");
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        "the user's own file"
    );

    // Later runs take the tuned cap and say so; --tile-max goes over it, silently.
    let (settings, stderr) = run_json(cache.path(), &[]);
    assert_eq!(settings["tile_cap_source"], "tuned", "{settings}");
    assert_eq!(settings["tile_policy"], format!("alignment(cap {cap})"));
    assert!(
        stderr.contains(&format!("note: tile cap {cap}, measured by `moetile tune`")),
        "{stderr}"
    );
    let (settings, stderr) = run_json(cache.path(), &["--tile-max", "32"]);
    assert_eq!(settings["tile_cap_source"], "config", "{settings}");
    assert!(!stderr.contains("moetile tune"), "{stderr}");

    // A corrupt record: a warning, the default cap, and a run that works.
    std::fs::write(folder.join("tuning.json"), "{\"version\": 1, \"entr").unwrap();
    let (settings, stderr) = run_json(cache.path(), &[]);
    assert_eq!(settings["tile_cap_source"], "default", "{settings}");
    assert!(
        stderr.contains("warning: ignoring the tuning record") && stderr.contains("not JSON"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Tuning again says what it drops and writes a good record; the user's file stays.
    let out = run_in(cache.path(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ignoring the tuning record"),
        "{stderr}"
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(folder.join("tuning.json")).unwrap()).unwrap();
    assert_eq!(record["version"], 1);
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        "the user's own file"
    );
}

#[test]
fn tune_rejects_bad_token_counts_before_opening_a_device() {
    let out = moetile()
        .args(["tune", "-m", model_arg(), "--tokens", "100"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("multiples of 128"), "{stderr}");
}
