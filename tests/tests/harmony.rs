//! gpt-oss's harmony chat template (`fixtures/chat/gpt-oss.jinja`, the template gpt-oss GGUFs
//! carry) rendered by moetile's minijinja set-up byte for byte as Python's jinja2 renders it
//! under Hugging Face's set-up: the cases and jinja2's renderings are in
//! `fixtures/chat/harmony/` (written once by `fixtures/chat/render_harmony.py`; README.md
//! there). The cases cover a multi-turn chat with and without the generation prompt, the
//! reasoning effort, the assistant's last turn, function tools with a call and its result,
//! built-in tools with a model identity, and the conversations the template refuses.

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
