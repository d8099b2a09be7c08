//! `moetile run`: streamed text, the closing line, `--json`, and the flags reaching the session.

use moetile::gguf::GgufFile;
use moetile::tokenizer::Tokenizer;
use serde_json::Value;

use crate::{model_arg, moetile, stdout_of, tiny_model};

fn run_json(args: &[&str]) -> Value {
    let out = stdout_of(
        moetile()
            .args(["run", "--cpu", "-m", model_arg(), "--json"])
            .args(args),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn tokens(v: &Value) -> Vec<u64> {
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[test]
fn run_streams_text_and_closes_with_speeds() {
    let out = moetile()
        .args(["run", "--cpu", "-m", model_arg(), "-p", "Once upon a time"])
        .args(["-n", "8", "--temp", "0", "--ignore-eos"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let closing = stderr.lines().last().unwrap();
    // The random model's tokens may be special ones that print as nothing: the count is what
    // shows they were generated.
    for part in [
        "prompt 10 tokens",
        "prefill",
        "generated 8 tokens",
        "decode",
        "tok/s",
    ] {
        assert!(closing.contains(part), "{part:?} missing: {closing}");
    }
}

#[test]
fn json_holds_text_tokens_timings_tiles_and_settings() {
    let v = run_json(&[
        "-p",
        "Once upon a time",
        "-n",
        "12",
        "--seed",
        "3",
        "--tile-max",
        "64",
    ]);
    let ids = tokens(&v);
    let t = &v["timings"];
    assert_eq!(t["generated_tokens"].as_u64().unwrap() as usize, ids.len());
    assert!(ids.len() <= 12);
    match v["stop_reason"].as_str().unwrap() {
        "max tokens" => assert_eq!(ids.len(), 12),
        "end of generation" => {}
        other => panic!("stop reason {other}"),
    }
    assert_eq!(t["prompt_tokens"], 10);
    assert!(t["prefill_tps"].as_f64().unwrap() > 0.0);
    assert!(v["load_ms"].as_f64().unwrap() > 0.0 && v["prepare_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(t["tiles_used"], serde_json::json!([32]));
    assert_eq!(v["settings"]["tile_policy"], "alignment(cap 64)");
    assert_eq!(v["sampler"]["seed"], 3);
    assert_eq!(v["backend"]["kind"], "cpu");
    assert!(!v["moetile_commit"].as_str().unwrap().is_empty());
    assert_eq!(v["model"]["arch"], "qwen3moe");

    // The text is what the library's stream decoder makes of the tokens.
    let file = GgufFile::open(tiny_model()).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let mut decoder = tokenizer.stream_decoder().skip_control(true);
    let mut text: String = ids.iter().map(|&id| decoder.push(id as u32)).collect();
    text.push_str(&decoder.finish());
    assert_eq!(v["text"], text);
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let args = |seed: &'static str| {
        [
            "-p", "Hello", "-n", "16", "--temp", "1.5", "--top-k", "0", "--seed", seed,
        ]
    };
    let a = tokens(&run_json(&args("11")));
    assert_eq!(a, tokens(&run_json(&args("11"))));
    assert_ne!(a, tokens(&run_json(&args("12"))));
}

#[test]
fn chunked_prefill_generates_what_one_chunk_does() {
    let prompt = "The tile width of the routed experts is chosen per chunk of the prompt.";
    let whole = run_json(&["-p", prompt, "-n", "6", "--temp", "0"]);
    let chunked = run_json(&["-p", prompt, "-n", "6", "--temp", "0", "--chunk", "5"]);
    assert_eq!(tokens(&whole), tokens(&chunked));
}

#[test]
fn tile_flags_decide_the_widths_used() {
    // 100 prompt tokens ("the" and " the" are one token each) in chunks of 64: 64 (tile 64
    // under alignment) and 36 (tile 32).
    let prompt = format!("the{}", " the".repeat(99));
    let file = GgufFile::open(tiny_model()).unwrap();
    assert_eq!(
        Tokenizer::from_gguf(&file)
            .unwrap()
            .encode(&prompt, true, true)
            .len(),
        100
    );
    let tiles = |extra: &[&str]| {
        let mut args = vec!["-p", prompt.as_str(), "-n", "1", "--chunk", "64"];
        args.extend_from_slice(extra);
        run_json(&args)["timings"]["tiles_used"].clone()
    };
    assert_eq!(tiles(&[]), serde_json::json!([64, 32]));
    assert_eq!(tiles(&["--tile-max", "32"]), serde_json::json!([32]));
    assert_eq!(
        tiles(&["--tile-policy", "fixed:128"]),
        serde_json::json!([128])
    );
    let env = stdout_of(
        moetile()
            .env("MOETILE_TILE_MAX", "32")
            .args([
                "run",
                "--cpu",
                "-m",
                model_arg(),
                "--json",
                "-n",
                "1",
                "--chunk",
                "64",
            ])
            .args(["-p", prompt.as_str()]),
    );
    let env: Value = serde_json::from_str(&env).unwrap();
    assert_eq!(env["timings"]["tiles_used"], serde_json::json!([32]));
}

#[test]
fn prompt_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt.txt");
    std::fs::write(&path, "Once upon a time").unwrap();
    let v = run_json(&["--prompt-file", path.to_str().unwrap(), "-n", "2"]);
    assert_eq!(v["timings"]["prompt_tokens"], 10);
}
