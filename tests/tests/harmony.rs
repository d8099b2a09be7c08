//! gpt-oss's harmony chat template (`fixtures/chat/gpt-oss.jinja`, the template gpt-oss GGUFs
//! carry) rendered by moetile's minijinja set-up byte for byte as Python's jinja2 renders it
//! under Hugging Face's set-up: the cases and jinja2's renderings are in
//! `fixtures/chat/harmony/` (written once by `fixtures/chat/render_harmony.py`; README.md
//! there). The cases cover a multi-turn chat with and without the generation prompt, the
//! reasoning effort, the assistant's last turn, function tools with a call and its result,
//! built-in tools with a model identity, and the conversations the template refuses. The tiny
//! gpt-oss that `moetile serve`'s tests use carries this template and harmony's tags.

use std::path::PathBuf;

use moetile::chat::ChatTemplate;
use moetile_tests::fixtures;
use serde_json::Value;

fn harmony() -> PathBuf {
    fixtures().join("chat/harmony")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first line where `got` and `want` differ, for the failure message.
fn first_difference(got: &str, want: &str) -> String {
    let (mut g, mut w) = (got.lines(), want.lines());
    for line in 1.. {
        match (g.next(), w.next()) {
            (None, None) => return "same lines, different line ends".into(),
            (a, b) if a != b => return format!("line {line}: got {a:?}, want {b:?}"),
            _ => {}
        }
    }
    unreachable!()
}

#[test]
fn harmony_template_renders_as_jinja2_does() {
    let cases: Value = serde_json::from_str(&read(harmony().join("cases.json"))).unwrap();
    let source = read(fixtures().join("chat/gpt-oss.jinja"));
    let clock = cases["clock"].as_i64().unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut template = ChatTemplate::new(&source, "<|startoftext|>", "<|return|>").unwrap();
        template.set_clock(clock).unwrap();
        if let Some(variables) = case.get("variables").and_then(Value::as_object) {
            for (k, v) in variables {
                template.set_variable(k, v);
            }
        }
        let messages = case["messages"].as_array().unwrap();
        let tools = case.get("tools").and_then(Value::as_array);
        let add_generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
        let got = template.render_json(messages, tools.map(Vec::as_slice), add_generation_prompt);
        let expected = harmony().join(format!("{name}.txt"));
        if expected.exists() {
            let want = read(expected);
            let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(got == want, "{name}: {}", first_difference(&got, &want));
        } else {
            let want = read(harmony().join(format!("{name}.error.txt")));
            let err = got.expect_err(name).to_string();
            assert!(
                err.ends_with(&format!("the template refused the conversation: {want}")),
                "{name}: {err}"
            );
        }
    }
}

/// The tiny gpt-oss of the server's tests has gpt-oss's text side, so the server stops as it
/// must on gpt-oss: `<|return|>` and `<|call|>` end the turn and so generation, `<|end|>`
/// (which only ends a message) does not, and the header tags are written out as text for
/// `moetile::harmony` to read.
#[test]
fn tiny_gptoss_ends_turns_at_return_and_call_only() {
    use moetile::generate::StopConditions;
    use moetile::gguf::GgufFile;
    use moetile::tokenizer::Tokenizer;

    let file = GgufFile::from_bytes(moetile_tests::tiny_gptoss_harmony(1)).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    assert!(moetile::harmony::writes_harmony(&tokenizer));
    let id = |text: &str| tokenizer.token_id(text).unwrap();
    let ends = StopConditions::new(16, &tokenizer).end_tokens;
    assert!(ends.contains(&id("<|return|>")) && ends.contains(&id("<|call|>")));
    assert!(!ends.contains(&id("<|end|>")));
    let header = [
        "<|start|>",
        "<|channel|>",
        "<|message|>",
        "<|constrain|>",
        "<|end|>",
    ];
    let ids: Vec<u32> = header.iter().map(|t| id(t)).collect();
    assert_eq!(tokenizer.decode(&ids), header.concat());
    let template = file.get_str("tokenizer.chat_template").unwrap();
    assert_eq!(template, read(fixtures().join("chat/gpt-oss.jinja")));
}
