//! Prompts as token ids (`--prompt-ids`, `--prompt-ids-file`) on `run`, `verify` and `bench`,
//! and a model file without a tokenizer: it runs on ids, and refuses text naming the fix.

use std::path::Path;

use assert_cmd::Command;
use moetile::gguf::{GgufFile, GgufWriter};
use serde_json::Value;

use crate::{model_arg, moetile, stdout_of, tiny_model};

const PROMPT: &str = "Once upon a time";

fn run_json(input: &[&str], model: &str) -> Value {
    let out = stdout_of(
        moetile()
            .args([
                "run", "--cpu", "-m", model, "--json", "-n", "8", "--temp", "0",
            ])
            .arg("--ignore-eos")
            .args(input),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

fn joined(ids: &[u64], sep: &str) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(sep)
}

/// The failure's one `error:` line, after checking that it is a usage error (status 2).
fn usage_error(cmd: &mut Command) -> String {
    let out = cmd.env("RUST_BACKTRACE", "1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

/// A copy of the tiny model without its `tokenizer.*` keys (chat template included), with
/// `tokenizer.ggml.model = model` when given (llama.cpp's test models write "none").
fn without_tokenizer(dir: &Path, model: Option<&str>) -> String {
    let file = GgufFile::open(tiny_model()).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata() {
        if !key.starts_with("tokenizer.") {
            w.add_metadata(key, value.clone()).unwrap();
        }
    }
    if let Some(model) = model {
        w.add_metadata("tokenizer.ggml.model", model).unwrap();
    }
    for t in file.tensors() {
        w.add_tensor(t.name.as_str(), t.ty, &t.dims).unwrap();
    }
    let data: Vec<&[u8]> = file
        .tensors()
        .iter()
        .map(|t| file.tensor_bytes(t))
        .collect();
    let path = dir.join(format!("no-tokenizer-{}.gguf", model.unwrap_or("absent")));
    std::fs::write(&path, w.to_bytes(&data).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn ids_from_the_flag_and_a_file_run_what_the_text_tokenizes_to() {
    let text = run_json(&["-p", PROMPT], model_arg());
    let prompt = numbers(&text["prompt_token_ids"]);
    assert!(prompt.len() > 1);
    let flag = run_json(&["--prompt-ids", &joined(&prompt, ",")], model_arg());
    let dir = tempfile::tempdir().unwrap();
    // One id per line, as the deepseek4 fixture's prompt file is one comma-separated line.
    let file = dir.path().join("ids.txt");
    std::fs::write(&file, joined(&prompt, "\n") + "\n").unwrap();
    let from_file = run_json(&["--prompt-ids-file", file.to_str().unwrap()], model_arg());
    for ids in [&flag, &from_file] {
        assert_eq!(ids["prompt_token_ids"], text["prompt_token_ids"]);
        assert_eq!(ids["token_ids"], text["token_ids"]);
        assert_eq!(
            ids["text"], text["text"],
            "a model with a tokenizer prints text"
        );
    }

    // verify: every position's comparison is the same for the text and its ids.
    let verify = |input: &[&str]| {
        stdout_of(
            moetile()
                .args(["verify", "--cpu", "-m", model_arg(), "--per-position"])
                .args(input),
        )
    };
    let spaced = joined(&prompt, " ");
    assert_eq!(verify(&["--prompt-ids", &spaced]), verify(&["-p", PROMPT]));
}

#[test]
fn ids_are_run_as_given_without_a_bos() {
    // The tiny model adds no BOS to text either; ids are never changed, whatever the model.
    let v = run_json(&["--prompt-ids", "5,6,7"], model_arg());
    assert_eq!(numbers(&v["prompt_token_ids"]), [5, 6, 7]);
}

#[test]
fn bench_takes_its_prompt_tokens_from_the_ids() {
    let out = stdout_of(
        moetile()
            .args([
                "bench",
                "--cpu",
                "-m",
                model_arg(),
                "-p",
                "8",
                "-n",
                "2",
                "-r",
                "1",
            ])
            .args(["--prompt-ids", "1,2,3"]),
    );
    assert!(out.contains("prompt: 3 token ids of --prompt-ids"), "{out}");
    assert!(out.contains("| pp8 |") && out.contains("| tg2 |"), "{out}");
}

#[test]
fn bad_ids_are_usage_errors_naming_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    let commands: [&[&str]; 3] = [&["run"], &["verify"], &["bench", "-p", "4", "-n", "1"]];
    for cmd in commands {
        let err = |ids: &[&str]| {
            usage_error(
                moetile()
                    .args(cmd)
                    .args(["--cpu", "-m", model_arg()])
                    .args(ids),
            )
        };
        let e = err(&["--prompt-ids", "1,2,x3"]);
        assert!(
            e.contains("--prompt-ids") && e.contains("item 3") && e.contains("\"x3\""),
            "{cmd:?}: {e}"
        );
        let e = err(&["--prompt-ids", "4,512"]);
        assert!(
            e.contains("item 2") && e.contains("512") && e.contains("vocabulary of 512"),
            "{cmd:?}: {e}"
        );
        let e = err(&["--prompt-ids", " , "]);
        assert!(e.contains("no token ids"), "{cmd:?}: {e}");
        let e = err(&["--prompt-ids-file", empty]);
        assert!(
            e.contains(empty) && e.contains("no token ids"),
            "{cmd:?}: {e}"
        );
    }
    // A text prompt and ids together: clap's conflict, also status 2.
    for cmd in ["run", "verify"] {
        let out = moetile()
            .args([
                cmd,
                "--cpu",
                "-m",
                model_arg(),
                "-p",
                "hi",
                "--prompt-ids",
                "1",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
}

#[test]
fn ids_longer_than_the_context_are_refused() {
    let ids = joined(&[7; 20], ",");
    let out = moetile()
        .args([
            "run",
            "--cpu",
            "-m",
            model_arg(),
            "--ctx",
            "16",
            "--prompt-ids",
            &ids,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("20 tokens") && stderr.contains("--ctx"),
        "{stderr}"
    );
}

#[test]
fn a_model_without_a_tokenizer_runs_on_ids_and_prints_ids() {
    let dir = tempfile::tempdir().unwrap();
    let want = run_json(&["--prompt-ids", "3,1,4,1,5"], model_arg());
    for variant in [None, Some("none")] {
        let model = without_tokenizer(dir.path(), variant);
        // The same weights generate the same tokens; without text, `text` is null.
        let v = run_json(&["--prompt-ids", "3,1,4,1,5"], &model);
        assert_eq!(v["token_ids"], want["token_ids"], "{variant:?}");
        assert!(v["text"].is_null(), "{v}");
        // Streamed: the ids, space-separated, as --prompt-ids reads them back.
        let out = stdout_of(
            moetile()
                .args(["run", "--cpu", "-m", &model, "-n", "8", "--temp", "0"])
                .args(["--ignore-eos", "--prompt-ids", "3,1,4,1,5"]),
        );
        assert_eq!(out.trim_end(), joined(&numbers(&want["token_ids"]), " "));

        let ok =
            stdout_of(moetile().args(["verify", "--cpu", "-m", &model, "--prompt-ids", "1,2"]));
        assert!(ok.trim_end().ends_with("OK"), "{ok}");
        stdout_of(
            moetile()
                .args([
                    "bench", "--cpu", "-m", &model, "-p", "4", "-n", "1", "-r", "1",
                ])
                .args(["--prompt-ids", "9"]),
        );
    }
}

#[test]
fn a_model_without_a_tokenizer_refuses_text_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let model = without_tokenizer(dir.path(), Some("none"));
    let refusals: [&[&str]; 5] = [
        &["run", "-p", "hello"],
        &["verify"],
        &["verify", "-p", "hello"],
        &["bench", "-p", "4", "-n", "1"],
        &["chat"],
    ];
    for cmd in refusals {
        let e = usage_error(moetile().args(cmd).args(["--cpu", "-m", &model]));
        assert!(
            e.contains(&model) && e.contains("this model file has no tokenizer"),
            "{cmd:?}: {e}"
        );
        assert!(e.contains("--prompt-ids"), "{cmd:?}: {e}");
    }
}
