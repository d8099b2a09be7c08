//! `moetile synth`: writes a loadable model, deterministically, never clobbering a file
//! without `--force`.

use moetile::gguf::GgufFile;
use moetile::model::ModelConfig;

use crate::{moetile, one_line_error, stdout_of};

#[test]
fn synth_writes_a_model_refuses_to_overwrite_and_force_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let p = path.to_str().unwrap();
    let synth = |extra: &[&str]| {
        let mut cmd = moetile();
        cmd.args([
            "synth",
            "--preset",
            "tiny-qwen3moe",
            "--quant",
            "q2_k",
            "-o",
            p,
        ])
        .args(extra);
        cmd
    };
    let out = stdout_of(&mut synth(&["--layers", "1", "--seed", "5"]));
    assert!(
        out.contains("wrote") && out.contains("tiny-qwen3moe"),
        "{out}"
    );
    let config = ModelConfig::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    assert_eq!((config.n_layers, config.d_model), (1, 256));
    let first = std::fs::read(&path).unwrap();

    let err = one_line_error(&mut synth(&["--layers", "1", "--seed", "6"]));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        first,
        "the existing file changed"
    );

    stdout_of(&mut synth(&["--layers", "1", "--seed", "6", "--force"]));
    let second = std::fs::read(&path).unwrap();
    assert_eq!(first.len(), second.len());
    assert_ne!(first, second, "another seed, other weights");
    stdout_of(&mut synth(&["--layers", "1", "--seed", "5", "--force"]));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        first,
        "the same seed, the same bytes"
    );
    // Only the model is left: no temporary file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn synth_rejects_unknown_presets_and_mixes_listing_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let o = out.to_str().unwrap();
    let err = one_line_error(moetile().args(["synth", "--preset", "llama-7b", "-o", o]));
    assert!(
        err.contains("qwen3-30b-a3b") && err.contains("ds4-flash-moe"),
        "{err}"
    );
    let err = one_line_error(moetile().args([
        "synth",
        "--preset",
        "tiny-qwen3moe",
        "--quant",
        "q3_k",
        "-o",
        o,
    ]));
    assert!(err.contains("iq2_xxs-q2_k"), "{err}");
    assert!(!out.exists());
}

#[test]
fn synth_writes_deepseek4_that_runs_on_the_cpu_and_the_gpu() {
    // The runtime's forward pass runs deepseek4 through the Backend ops, on both backends.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ds4.gguf");
    let p = path.to_str().unwrap();
    let out = stdout_of(moetile().args([
        "synth",
        "--preset",
        "tiny-ds4",
        "--quant",
        "iq2_xxs-q2_k",
        "--layers",
        "3",
        "-o",
        p,
    ]));
    assert!(out.contains("tiny-ds4"), "{out}");
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.get_str("general.architecture").unwrap(), "deepseek4");
    assert_eq!(file.get_u64("deepseek4.block_count").unwrap(), 3);
    let run = [
        "run",
        "-m",
        p,
        "--prompt-ids",
        "1,2,3",
        "-n",
        "4",
        "--temp",
        "0",
        "--json",
    ];
    for qat_sim in ["on", "off"] {
        let out = stdout_of(moetile().args(run).args(["--cpu", "--qat-sim", qat_sim]));
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["token_ids"].as_array().unwrap().len(), 4, "{out}");
    }
    // The cache is estimated before loading: the raw window and the compressed rows.
    let out = moetile().args(run).arg("--cpu").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cache for 4096 positions") && stderr.contains("compressed rows"),
        "{stderr}"
    );
    // bench's sweep cuts the generated tokens off between frontiers: the compressed cache
    // cannot rewind, so each frontier is prefilled afresh.
    let sweep = [
        "bench",
        "-m",
        p,
        "--cpu",
        "--ctx-start",
        "8",
        "--ctx-max",
        "16",
        "--step-incr",
        "8",
        "--gen-tokens",
        "2",
    ];
    let out = stdout_of(moetile().args(sweep));
    assert!(out.contains("| 8 |") && out.contains("| 16 |"), "{out}");
    // verify --cpu holds the runtime's graph to the whole-model reference.
    for qat_sim in ["on", "off"] {
        let verify = ["verify", "-m", p, "--cpu", "--qat-sim", qat_sim];
        let out = stdout_of(moetile().args(verify));
        assert!(
            out.contains("against the deepseek4 whole-model reference")
                && out.contains("top-1 agreement 100.0%")
                && out.trim_end().ends_with("OK"),
            "{out}"
        );
    }
    let err = one_line_error(moetile().args(run).args(["--cpu", "--qat-sim", "maybe"]));
    assert!(
        err.contains("--qat-sim") && err.contains("on or off"),
        "{err}"
    );
    // The GPU generates the CPU's tokens, with the simulation and without.
    if crate::gpu::devices().is_some() {
        let ids = |extra: &[&str]| {
            let out = stdout_of(moetile().args(run).args(extra));
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
            doc["token_ids"].clone()
        };
        for qat_sim in ["on", "off"] {
            let gpu = ids(&["--qat-sim", qat_sim]);
            assert_eq!(
                gpu,
                ids(&["--qat-sim", qat_sim, "--cpu"]),
                "qat-sim {qat_sim}"
            );
        }
    }
    // The K-quant mixes llama.cpp makes are not the ones deepseek4 files come in.
    let err = one_line_error(moetile().args([
        "synth", "--preset", "tiny-ds4", "--quant", "q4_k_m", "-o", p, "--force",
    ]));
    assert!(err.contains("iq2_xxs-q2_k, q4_k"), "{err}");
}
