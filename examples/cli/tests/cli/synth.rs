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
fn synth_writes_deepseek4_that_bench_and_profile_refuse_naming_the_architecture() {
    // The runtime's forward pass does not run deepseek4 yet (only the CPU reference,
    // moetile_cpu::deepseek4, does): the commands that would measure it say so by name before
    // any work, rather than failing deeper.
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
    for cmd in [
        &["bench", "-m", p][..],
        &["bench", "-m", p, "--cpu"],
        &["profile", "-m", p],
    ] {
        let err = one_line_error(moetile().args(cmd));
        assert!(
            err.contains("unsupported model architecture \"deepseek4\""),
            "{cmd:?}: {err}"
        );
    }
    // The K-quant mixes llama.cpp makes are not the ones deepseek4 files come in.
    let err = one_line_error(moetile().args([
        "synth", "--preset", "tiny-ds4", "--quant", "q4_k_m", "-o", p, "--force",
    ]));
    assert!(err.contains("iq2_xxs-q2_k, q4_k"), "{err}");
}
