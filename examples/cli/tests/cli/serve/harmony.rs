//! `moetile serve` on a tiny gpt-oss with gpt-oss's text side (harmony's tags in its
//! vocabulary, gpt-oss's chat template): conversations in OpenAI's shape, tool calls and
//! results included, render as jinja2 renders the template's own shape of them
//! (`tests/fixtures/chat/harmony/`); `reasoning_effort` is taken or refused; and no harmony tag
//! reaches the client, whole or streamed. The random model writes no real harmony answer:
//! reading those is unit-tested on the server's own code (`src/cmd/serve/harmony.rs`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Server;

/// The tiny gpt-oss shared by these tests.
fn gptoss_model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let model = moetile_tests::tiny_gptoss_harmony(moetile_tests::seed("tiny gpt-oss"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny-gptoss.gguf");
        std::fs::write(&path, model).unwrap();
        (dir, path)
    });
    path
}

/// A server of the tiny gpt-oss with one slot, so each request finds the previous one's
/// tokens in its cache.
fn gptoss_server() -> Server {
    let model = gptoss_model().to_str().unwrap();
    Server::spawn(&["--cpu", "-m", model, "--parallel", "1"])
}

fn fixture(name: &str) -> PathBuf {
    moetile_tests::fixtures().join("chat/harmony").join(name)
}

/// Today's UTC date as the template's `strftime_now("%Y-%m-%d")` writes it (days since the
/// epoch to a civil date, Howard Hinnant's `civil_from_days`).
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A fixture case's messages as an OpenAI client sends them: reasoning as
/// `reasoning_content`, a call's arguments as JSON text with an id, a result naming its call
/// by id, no content beside calls as `null`.
fn openai_messages(messages: &Value) -> Value {
    let mut last_call = String::new();
    let messages = messages.as_array().unwrap().iter().map(|message| {
        let mut message = message.as_object().unwrap().clone();
        if let Some(thinking) = message.remove("thinking") {
            message.insert("reasoning_content".into(), thinking);
        }
        if let Some(calls) = message.get_mut("tool_calls") {
            for (i, call) in calls.as_array_mut().unwrap().iter_mut().enumerate() {
                last_call = format!("call-{i}");
                call["id"] = last_call.clone().into();
                let arguments = &mut call["function"]["arguments"];
                *arguments = arguments.to_string().into();
            }
            message.entry("content").or_insert(Value::Null);
        }
        if message["role"] == "tool" {
            message.insert("tool_call_id".into(), last_call.clone().into());
        }
        Value::Object(message)
    });
    messages.collect()
}

/// Fails if any harmony tag is in `answer`.
fn assert_no_tags(answer: &Value) {
    let text = answer.to_string();
    for tag in moetile_tests::HARMONY_TAGS {
        assert!(!text.contains(tag), "{tag} reached the client: {text}");
    }
}

/// Every fixture conversation a request can ask for (the generation prompt on; no variables
/// but `reasoning_effort`, the one a request sets) gives the prompt jinja2 rendered, token for
/// token: sent first as a completion's prompt, it fills the slot's cache, and the chat request
/// then finds all of its prompt there. The conversations the template refuses are 400s.
#[test]
fn gpt_oss_conversations_render_as_the_fixtures_with_tools_and_effort() {
    let server = gptoss_server();
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("cases.json")).unwrap()).unwrap();
    let mut checked = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let variables = case.get("variables").and_then(Value::as_object);
        let asked = case["add_generation_prompt"] == true
            && variables.is_none_or(|v| v.keys().all(|k| k == "reasoning_effort"));
        if !asked {
            continue;
        }
        let mut body = json!({
            "messages": openai_messages(&case["messages"]),
            "max_tokens": 4,
            "seed": 7,
        });
        if let Some(tools) = case.get("tools") {
            body["tools"] = tools.clone();
        }
        if let Some(effort) = variables.and_then(|v| v.get("reasoning_effort")) {
            body["reasoning_effort"] = effort.clone();
        }
        let refusal = fixture(&format!("{name}.error.txt"));
        if refusal.exists() {
            let want = std::fs::read_to_string(refusal).unwrap();
            let answer = server.post("/v1/chat/completions", &body.to_string(), None);
            let error = answer.error(400);
            assert!(
                error["message"].as_str().unwrap().contains(want.trim()),
                "{name}: {error}"
            );
            checked.push(name);
            continue;
        }
        let want = std::fs::read_to_string(fixture(&format!("{name}.txt"))).unwrap();
        // Again if the date changed meanwhile (the server renders its own "today").
        let (n, v) = loop {
            let date = today();
            let want = want.replace("Current date: 2025-08-05", &format!("Current date: {date}"));
            let filled = server.ok("/v1/completions", &json!({"prompt": want, "max_tokens": 1}));
            let n = filled["usage"]["prompt_tokens"].as_u64().unwrap();
            let v = server.ok("/v1/chat/completions", &body);
            if today() == date {
                break (n, v);
            }
        };
        assert_eq!(v["usage"]["prompt_tokens"], n, "{name}: {v}");
        assert_eq!(
            v["usage"]["prompt_tokens_details"]["cached_tokens"],
            n - 1,
            "{name}: the prompt is not the fixture's"
        );
        assert_no_tags(&v);
        checked.push(name);
    }
    assert_eq!(
        checked,
        [
            "multi_turn",
            "reasoning_high",
            "tool_call_and_result",
            "tool_round_trip",
            "channel_tags_refused",
            "tool_result_without_call_refused"
        ]
    );
}

/// `reasoning_effort` outside gpt-oss's levels is refused in the server's error shape, and the
/// server goes on.
#[test]
fn gpt_oss_refuses_an_unknown_reasoning_effort() {
    let server = gptoss_server();
    let body = json!({
        "messages": [{"role": "user", "content": "Hi"}],
        "reasoning_effort": "extreme",
    });
    let answer = server.post("/v1/chat/completions", &body.to_string(), None);
    let error = answer.error(400);
    assert_eq!(error["param"], "reasoning_effort", "{error}");
    assert_eq!(error["code"], "invalid_value", "{error}");
    assert!(error["message"].as_str().unwrap().contains("extreme"));
    let body = json!({
        "messages": [{"role": "user", "content": "Hi"}],
        "reasoning_effort": "low",
        "max_tokens": 2,
    });
    server.ok("/v1/chat/completions", &body);
}

/// Sampled answers (whatever tags the random model writes) reach the client without harmony
/// tags, and a streamed answer carries what the whole one does: reasoning, content, calls and
/// finish reason.
#[test]
fn gpt_oss_answers_stream_as_they_are_whole_without_tags() {
    let server = gptoss_server();
    let tools = json!([{"type": "function", "function": {
        "name": "now", "description": "The time.",
        "parameters": {"type": "object", "properties": {}}}}]);
    for seed in 1..=3 {
        let mut body = json!({
            "messages": [{"role": "user", "content": "What time is it?"}],
            "tools": tools,
            "max_tokens": 24,
            "seed": seed,
        });
        let whole = server.ok("/v1/chat/completions", &body);
        assert_no_tags(&whole);
        let choice = &whole["choices"][0];
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        let want = (
            text(&choice["message"]["reasoning_content"]),
            text(&choice["message"]["content"]),
            choice["message"]["tool_calls"]
                .as_array()
                .map_or(0, Vec::len),
            choice["finish_reason"].clone(),
        );
        body["stream"] = true.into();
        let lines = server.stream("/v1/chat/completions", &body);
        assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
        let mut got = (String::new(), String::new(), 0, Value::Null);
        for line in &lines[..lines.len() - 1] {
            let chunk: Value = serde_json::from_str(line).unwrap();
            assert_no_tags(&chunk);
            let choice = &chunk["choices"][0];
            got.0.push_str(&text(&choice["delta"]["reasoning_content"]));
            got.1.push_str(&text(&choice["delta"]["content"]));
            got.2 += choice["delta"]["tool_calls"].as_array().map_or(0, Vec::len);
            if !choice["finish_reason"].is_null() {
                got.3 = choice["finish_reason"].clone();
            }
        }
        assert_eq!(got, want, "seed {seed}");
    }
}
