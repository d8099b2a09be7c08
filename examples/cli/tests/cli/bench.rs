//! `moetile bench`: the frontier sweep's CSV, SVG and JSON; the llama-bench table; A/B runs.

use serde_json::Value;

use crate::{model_arg, moetile, stdout_of};

const HEADER: &str = "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,gen_first_ms,gen_steady_tps,kvcache_bytes";

const SHORT_SWEEP: [&str; 8] = [
    "--ctx-start",
    "32",
    "--step-incr",
    "32",
    "--ctx-max",
    "96",
    "--gen-tokens",
    "3",
];

/// `moetile bench` on the CPU: the short sweep over the tiny model, writing `csv`.
fn short_sweep(csv: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = moetile();
    let csv = csv.to_str().unwrap();
    cmd.args(["bench", "--cpu", "-m", model_arg(), "--csv", csv])
        .args(SHORT_SWEEP);
    cmd
}

/// Checks a sweep's CSV, SVG and JSON files; returns the CSV rows.
fn check_files(csv: &std::path::Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HEADER));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    for r in &rows {
        assert_eq!(r.len(), 8);
        assert!(r.iter().all(|v| v.is_finite() && *v >= 0.0), "{r:?}");
        assert_eq!(r[3], 3.0, "gen_tokens");
    }
    let svg = std::fs::read_to_string(csv.with_extension("svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("SVG: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(svg.contains("prefill") && svg.contains("decode"));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(csv.with_extension("json")).unwrap())
            .unwrap();
    for key in [
        "moetile_commit",
        "backend",
        "model",
        "tile_policy",
        "sweep",
        "rows",
    ] {
        assert!(!json[key].is_null(), "{key} missing: {json}");
    }
    assert_eq!(json["backend"]["kind"], "cpu");
    rows
}

#[test]
fn sweep_writes_csv_with_the_exact_header_an_svg_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("out/sweep.csv");
    let out = stdout_of(&mut short_sweep(&csv));
    let rows = check_files(&csv);
    let ctx: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(ctx, [32.0, 64.0, 96.0]);
    assert!(
        rows.iter().all(|r| r[1] == 32.0),
        "each step prefills 32 new tokens"
    );
    // K and V of 2 layers, 2 heads of 64, f32, per context token.
    assert_eq!(rows[0][7], 32.0 * 2.0 * 2.0 * 2.0 * 64.0 * 4.0);
    assert!(out.contains("| 96 |"), "{out}");
    assert!(
        out.contains("CPU reference") && out.contains("moetile "),
        "{out}"
    );
}

#[test]
fn tile_lists_run_each_setting_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ab.csv");
    let out = stdout_of(short_sweep(&csv).args([
        "--tile-max",
        "32,64",
        "--tile-policy",
        "alignment,fixed:128",
    ]));
    for label in ["alignment(cap 32)", "alignment(cap 64)", "fixed:128"] {
        assert!(out.contains(label), "{label}: {out}");
    }
    for suffix in ["alignment-cap-32", "alignment-cap-64", "fixed-128"] {
        check_files(&dir.path().join(format!("ab-{suffix}.csv")));
    }
}

#[test]
fn table_reports_mean_and_stddev_in_each_format() {
    let table = |format: &str| {
        stdout_of(
            moetile()
                .args(["bench", "--cpu", "-m", model_arg()])
                .args(["-p", "16,32", "-n", "4", "-r", "2", "--output", format]),
        )
    };
    let md = table("md");
    for row in ["| pp16 |", "| pp32 |", "| tg4 |"] {
        let line = md
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("{md}"));
        assert!(line.contains(" ± "), "{line}");
    }
    let csv = table("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("moetile_commit,backend,driver,model"));
    assert!(lines[3].contains(",tg4,0,4,2,"), "{csv}");
    let json: Value = serde_json::from_str(&table("json")).unwrap();
    let tests = json["results"][0]["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 3);
    assert_eq!(tests[0]["samples_tps"].as_array().unwrap().len(), 2);
    assert!(json["moetile_commit"].is_string());
}

#[test]
fn without_a_model_bench_synthesizes_one() {
    let out = moetile()
        .args(["bench", "--cpu"])
        .args(SHORT_SWEEP)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("synthetic tiny-qwen3moe"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("| 96 |"));
}
