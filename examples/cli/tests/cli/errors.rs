//! Bad input: each a non-zero exit with one clear `error:` line, no panic, no backtrace.

use moetile::gguf::GgufWriter;
use moetile::quant::GgmlType;

use crate::{model_arg, moetile, one_line_error};

#[test]
fn missing_model_file() {
    let err = one_line_error(moetile().args(["run", "--cpu", "-m", "no/such.gguf", "-p", "x"]));
    assert!(
        err.contains("no/such.gguf") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.gguf");
    std::fs::write(&path, "just some text, long enough to hold a header").unwrap();
    let err =
        one_line_error(moetile().args(["run", "--cpu", "-m", path.to_str().unwrap(), "-p", "x"]));
    assert!(err.contains("not a GGUF file"), "{err}");
}

#[test]
fn unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2.gguf");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "gpt2").unwrap();
    w.add_tensor("token_embd.weight", GgmlType::F32, &[8, 4])
        .unwrap();
    std::fs::write(&path, w.to_bytes(&[&[0u8; 128]]).unwrap()).unwrap();
    for cmd in ["run", "verify"] {
        let err =
            one_line_error(moetile().args([cmd, "--cpu", "-m", path.to_str().unwrap(), "-p", "x"]));
        assert!(
            err.contains("\"gpt2\"") && err.contains("qwen3moe"),
            "{err}"
        );
    }
}

#[test]
fn bad_tile_max_names_the_allowed_values() {
    for cmd in [&["run", "-p", "x"][..], &["bench", "-p", "8"], &["verify"]] {
        let err = one_line_error(moetile().args(cmd).args([
            "--cpu",
            "-m",
            model_arg(),
            "--tile-max",
            "48",
        ]));
        assert!(
            err.contains("48") && err.contains("32, 64 or 128"),
            "{cmd:?}: {err}"
        );
    }
    let err = one_line_error(moetile().env("MOETILE_TILE_MAX", "100").args([
        "run",
        "--cpu",
        "-m",
        model_arg(),
        "-p",
        "x",
    ]));
    assert!(
        err.contains("MOETILE_TILE_MAX") && err.contains("32, 64 or 128"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_the_context() {
    // 40 tokens: "the" and " the" are one token each.
    let prompt = format!("the{}", " the".repeat(39));
    for cmd in ["run", "verify"] {
        let err = one_line_error(moetile().args([
            cmd,
            "--cpu",
            "-m",
            model_arg(),
            "--ctx",
            "16",
            "-p",
            &prompt,
        ]));
        assert!(
            err.contains("40 tokens") && err.contains("--ctx"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn out_of_range_sampling_values() {
    for (flag, value) in [("--temp", "-1"), ("--top-p", "0"), ("--min-p", "2")] {
        let err = one_line_error(moetile().args([
            "run",
            "--cpu",
            "-m",
            model_arg(),
            "-p",
            "x",
            flag,
            value,
        ]));
        assert!(err.contains(value), "{flag}: {err}");
    }
}
