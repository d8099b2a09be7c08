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
