//! `moetile serve`: a server on a port the system picks (`--port 0`), running the tiny model on
//! the CPU reference, driven over loopback with a plain HTTP client (and, in `openai.rs`, with
//! a third-party OpenAI client; in `harmony.rs`, a tiny gpt-oss). Every wait is bounded.

mod harmony;
mod openai;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{model_arg, moetile, moetile_std, one_line_error, stdout_of};

/// How long any one wait of these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(120);

/// A running server, stopped on drop.
struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

/// An answer: status, headers, body.
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The OpenAI error object of a refusal with `status`.
    fn error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let error = self.json()["error"].clone();
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        assert!(error["type"].is_string(), "{error}");
        error
    }
}

impl Server {
    /// Starts `moetile serve --cpu -m TINY --port 0 ARGS` and waits for it to listen.
    fn start(args: &[&str]) -> Server {
        Server::spawn(&[&["--cpu", "-m", model_arg()], args].concat())
    }

    /// Starts `moetile serve --port 0 ARGS` and waits for it to listen.
    fn spawn(args: &[&str]) -> Server {
        let mut child = moetile_std()
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines, listening) = mpsc::channel();
        // Drains stderr for the server's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                if let Some(rest) = line.strip_prefix("listening on ") {
                    let base = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = lines.send(base);
                }
            }
        });
        let base = listening
            .recv_timeout(PATIENCE)
            .expect("the server printed its address");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PATIENCE))
            .build()
            .into();
        Server { child, base, agent }
    }

    fn get(&self, path: &str) -> Answer {
        answer(
            self.agent
                .get(format!("{}{path}", self.base))
                .call()
                .unwrap(),
        )
    }

    /// A GET of `path` from a web page of `origin`, with `key`.
    fn get_from(&self, origin: &str, path: &str, key: &str) -> Answer {
        let request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("origin", origin)
            .header("authorization", format!("Bearer {key}"));
        answer(request.call().unwrap())
    }

    /// The preflight a browser sends from a page of `origin` before a POST to `path` with a
    /// key and a JSON body.
    fn preflight(&self, origin: &str, path: &str) -> Answer {
        let request = self
            .agent
            .options(format!("{}{path}", self.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            );
        answer(request.call().unwrap())
    }

    fn post(&self, path: &str, body: &str, key: Option<&str>) -> Answer {
        answer(self.request(path, key).send(body).unwrap())
    }

    fn request(
        &self,
        path: &str,
        key: Option<&str>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        match key {
            Some(key) => request.header("authorization", format!("Bearer {key}")),
            None => request,
        }
    }

    /// A successful JSON answer to `body` at `path`.
    fn ok(&self, path: &str, body: &Value) -> Value {
        let answer = self.post(path, &body.to_string(), None);
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
    }

    /// The `data:` payloads of a streamed answer, `[DONE]` included.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let response = self.request(path, None).send(body.to_string()).unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let mut text = String::new();
        response
            .into_body()
            .into_reader()
            .read_to_string(&mut text)
            .unwrap();
        data_lines(&text)
    }

    /// Polls `/metrics` until `name` reads `value`.
    fn wait_for_metric(&self, name: &str, value: f64) {
        let start = Instant::now();
        loop {
            let metrics = self.get("/metrics").body;
            let now = metric(&metrics, name);
            if now == value {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{name} stays {now}, not {value}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(response: ureq::http::Response<ureq::Body>) -> Answer {
    let (parts, mut body) = response.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.read_to_string().unwrap(),
    }
}

fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The value of metric `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Text and token count of `moetile run --cpu --json` on `prompt`, greedy, at most `n`
/// tokens.
fn run_greedy(prompt: &str, n: usize) -> (String, usize) {
    run_greedy_on(&["--cpu"], prompt, n)
}

/// [`run_greedy`] on the backend the flags `backend` select (none: the default adapter).
fn run_greedy_on(backend: &[&str], prompt: &str, n: usize) -> (String, usize) {
    let n = n.to_string();
    let v = run_report(&[backend, &["--temp", "0", "-n", &n, "-p", prompt]].concat());
    let tokens = v["token_ids"].as_array().unwrap().len();
    (v["text"].as_str().unwrap().to_string(), tokens)
}

/// The report of `moetile run -m TINY --json ARGS`.
fn run_report(args: &[&str]) -> Value {
    let out = stdout_of(
        crate::moetile()
            .args(["run", "-m", model_arg(), "--json"])
            .args(args),
    );
    serde_json::from_str(&out).unwrap()
}

/// The finish reason a greedy answer of `tokens` tokens out of at most `max` must give.
fn finish_reason(tokens: usize, max: usize) -> &'static str {
    if tokens == max { "length" } else { "stop" }
}

#[test]
fn completions_and_chat_answer_what_run_generates() {
    let server = Server::start(&["--parallel", "2"]);
    assert_eq!(server.get("/health").json()["status"], "ok");
    let models = server.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "tiny");

    let prompt = "Once upon a time";
    let (text, tokens) = run_greedy(prompt, 8);
    let request = json!({"model": "tiny", "prompt": prompt, "temperature": 0, "max_tokens": 8});
    let v = server.ok("/v1/completions", &request);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], text);
    assert_eq!(v["choices"][0]["finish_reason"], finish_reason(tokens, 8));
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    assert_eq!(v["usage"]["completion_tokens"], tokens);
    assert_eq!(v["usage"]["total_tokens"], 10 + tokens);

    // Streamed: the same text in pieces, the closing chunk, the usage chunk, then [DONE].
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let data = server.stream("/v1/completions", &streamed);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let pieces: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(pieces, text);
    let (usage, closing) = chunks.split_last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], tokens);
    let closing = closing.last().unwrap();
    assert_eq!(
        closing["choices"][0]["finish_reason"],
        finish_reason(tokens, 8)
    );

    // Sampled with a seed: run's tokens with run's samplers.
    let samplers = "--temp 0.9 --top-k 20 --top-p 0.9 --min-p 0.01 --repeat-penalty 1.1";
    let mut args = vec!["--cpu", "-p", prompt, "-n", "8", "--seed", "7"];
    args.extend(samplers.split(' '));
    let sampled = run_report(&args);
    let request = json!({
        "prompt": prompt, "max_tokens": 8, "temperature": 0.9, "top_k": 20, "top_p": 0.9,
        "min_p": 0.01, "repeat_penalty": 1.1, "seed": 7,
    });
    let v = server.ok("/v1/completions", &request);
    assert_eq!(v["choices"][0]["text"], sampled["text"]);

    // Chat: the messages through the model's template (ChatML) give run's tokens.
    let (text, tokens) = run_greedy("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", 6);
    let chat = json!({
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0,
        "max_completion_tokens": 6,
    });
    let v = server.ok("/v1/chat/completions", &chat);
    assert_eq!(v["object"], "chat.completion");
    let message = &v["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], text);
    assert_eq!(v["usage"]["completion_tokens"], tokens);
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();

    // The same conversation again reuses the slot's cache: all but the last prompt token.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let data = server.stream("/v1/chat/completions", &streamed);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let pieces: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(pieces, text);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], prompt_tokens);
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"],
        prompt_tokens - 1
    );

    // A stop text ends the answer before it (32 tokens: some have text even where many of
    // the random model's tokens are special ones that print nothing).
    let mut long = request.clone();
    long["max_tokens"] = json!(32);
    long["ignore_eos"] = json!(true);
    let v = server.ok("/v1/completions", &long);
    let text = v["choices"][0]["text"].as_str().unwrap();
    let middle = text.chars().count() / 2;
    let stop: String = text.chars().skip(middle).take(2).collect();
    assert!(!stop.is_empty(), "the greedy answer has no text");
    let before = &text[..text.find(&stop).unwrap()];
    long["stop"] = json!([stop, "never in the answer"]);
    let v = server.ok("/v1/completions", &long);
    assert_eq!(v["choices"][0]["text"], before);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let metrics = server.get("/metrics").body;
    assert_eq!(metric(&metrics, "moetile_slots"), 2.0);
    assert_eq!(metric(&metrics, "moetile_requests_total"), 7.0);
    assert!(metric(&metrics, "moetile_prompt_tokens_cached_total") >= (prompt_tokens - 1) as f64);
}

/// Prompts of different lengths for the batching tests.
const PROMPTS: [&str; 4] = [
    "Once upon a time",
    "The quick brown fox",
    "Hello",
    "1, 2, 3,",
];

/// The text of a completion reply.
fn completion_text(v: Value) -> String {
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

#[test]
fn concurrent_requests_each_get_what_they_get_alone() {
    let server = Server::start(&["--parallel", "2", "--queue", "8"]);
    let prompts = PROMPTS;
    let request = |prompt: &str| json!({"prompt": prompt, "temperature": 0, "max_tokens": 12, "ignore_eos": true});
    let text = completion_text;
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| text(server.ok("/v1/completions", &request(p))))
        .collect();
    // Twice as many requests as slots, half of them streamed: some wait in the queue.
    let together: Vec<(String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                scope.spawn(move || {
                    let whole = text(server.ok("/v1/completions", &request(p)));
                    let mut streamed = request(p);
                    streamed["stream"] = json!(true);
                    let data = server.stream("/v1/completions", &streamed);
                    let pieces = data[..data.len() - 1]
                        .iter()
                        .map(|d| text(serde_json::from_str(d).unwrap()))
                        .collect();
                    (whole, pieces)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (alone, (whole, streamed)) in alone.iter().zip(&together) {
        assert_eq!(whole, alone);
        assert_eq!(streamed, alone);
    }
    // Nothing left behind.
    server.wait_for_metric("moetile_active_sequences", 0.0);
    let metrics = server.get("/metrics").body;
    assert_eq!(metric(&metrics, "moetile_queue_length"), 0.0);
    assert_eq!(metric(&metrics, "moetile_requests_total"), 12.0);

    // Beside a long generation, every decode of a request runs in one forward pass with the
    // other's (the CPU reference batches sequences), and the answer is still the one alone.
    let long = json!({"prompt": "Hi", "stream": true, "ignore_eos": true, "max_tokens": 3000});
    let response = server
        .request("/v1/completions", None)
        .send(long.to_string())
        .unwrap();
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let beside = text(server.ok("/v1/completions", &request(prompts[0])));
    assert_eq!(beside, alone[0]);
    let metrics = server.get("/metrics").body;
    assert!(
        metric(&metrics, "moetile_batched_decodes_total") >= 11.0,
        "{metrics}"
    );
}

/// Greedy completions of `max_tokens` for each of `prompts` sent one after another, then all at
/// once: each answer together is the one alone.
fn check_together_equal_alone(server: &Server, prompts: &[String], max_tokens: usize) {
    let request = |prompt: &str| json!({"prompt": prompt, "temperature": 0, "max_tokens": max_tokens, "ignore_eos": true});
    let text = completion_text;
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| text(server.ok("/v1/completions", &request(p))))
        .collect();
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| scope.spawn(move || text(server.ok("/v1/completions", &request(p)))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (alone, together)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(together, alone, "request {i}: {:?}", prompts[i]);
    }
}

/// 32 slots decoding together (the CPU reference batches sequences): each answer is the one
/// the same request gets alone.
#[test]
fn thirty_two_concurrent_requests_each_get_what_they_get_alone() {
    let server = Server::start(&["--parallel", "32", "--ctx", "256"]);
    let prompts: Vec<String> = (0..32).map(|i| format!("{} {i}", PROMPTS[i % 4])).collect();
    check_together_equal_alone(&server, &prompts, 16);
    let metrics = server.get("/metrics").body;
    let passes = metric(&metrics, "moetile_batched_decodes_total");
    let rows = metric(&metrics, "moetile_batched_decode_rows_total");
    // Here ~30 rows a pass; only a pass of more than two rows is sure under any load.
    assert!(rows > 2.0 * passes, "{passes} passes of {rows} rows");
}

/// A qwen35moe's slots decode together too (its Gated DeltaNet state is kept per sequence):
/// each answer is the one the same request gets alone, and decodes ran batched.
#[test]
fn qwen35moe_concurrent_requests_each_get_what_they_get_alone() {
    check_synthetic_model_decodes_together("tiny qwen35moe", moetile_tests::tiny_qwen35moe);
}

/// A deepseek4's slots decode together too (its attention runs each row on its own window,
/// compressed rows and indexer): each answer is the one the same request gets alone, and
/// decodes ran batched.
#[test]
fn deepseek4_concurrent_requests_each_get_what_they_get_alone() {
    check_synthetic_model_decodes_together("tiny ds4", moetile_tests::tiny_ds4);
}

/// The CPU server over the tiny model `model` makes of a fresh seed (`what` names it), 4
/// slots: [`check_together_equal_alone`] for the 4 prompts, and at least one decode ran
/// batched.
fn check_synthetic_model_decodes_together(what: &str, model: fn(u64) -> Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, model(moetile_tests::seed(what))).unwrap();
    let model = path.to_str().expect("temporary paths are UTF-8 here");
    let server = Server::spawn(&["--cpu", "-m", model, "--parallel", "4", "--ctx", "128"]);
    let prompts = PROMPTS.map(String::from);
    check_together_equal_alone(&server, &prompts, 12);
    let metrics = server.get("/metrics").body;
    assert!(
        metric(&metrics, "moetile_batched_decodes_total") >= 1.0,
        "{metrics}"
    );
}

#[test]
fn without_a_model_it_serves_a_synthetic_one() {
    let server = Server::spawn(&["--cpu", "--parallel", "1"]);
    assert_eq!(
        server.get("/v1/models").json()["data"][0]["id"],
        "tiny-qwen3moe"
    );
    let v = server.ok("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 2);
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_goes_on() {
    let server = Server::start(&["--api-key", "sk-test", "--ctx", "32", "--max-body", "400"]);
    let key = Some("sk-test");
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body.to_string()
    };
    let path = "/v1/chat/completions";

    let error = server.post(path, &chat(json!({})), None).error(401);
    assert_eq!(error["code"], "invalid_api_key");
    server
        .post(path, &chat(json!({})), Some("sk-tesT"))
        .error(401);
    assert_eq!(server.get("/v1/models").status, 401);
    assert_eq!(server.get("/health").status, 200);

    let error = server.post(path, "{\"messages\": [", key).error(400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{error}"
    );
    let error = server.post(path, &chat(json!({"n": 2})), key).error(400);
    assert_eq!(error["param"], "n");
    let error = server.post(path, r#"{"model": "tiny"}"#, key).error(400);
    assert!(
        error["message"].as_str().unwrap().contains("messages"),
        "{error}"
    );
    let error = server
        .post(path, &chat(json!({"temperature": -1})), key)
        .error(400);
    assert!(
        error["message"].as_str().unwrap().contains("temperature"),
        "{error}"
    );
    let error = server
        .post(path, &chat(json!({"model": "gpt-9"})), key)
        .error(404);
    assert_eq!(error["code"], "model_not_found");
    let long = "once upon a time ".repeat(20);
    let body = json!({"messages": [{"role": "user", "content": long}]}).to_string();
    let error = server.post(path, &body, key).error(400);
    assert_eq!(error["code"], "context_length_exceeded");
    let error = server
        .post(path, &chat(json!({"max_tokens": 100})), key)
        .error(400);
    assert_eq!(error["param"], "max_tokens");
    let tools = json!([{"type": "function", "function": {"name": "now", "parameters": {}}}]);
    let error = server
        .post(path, &chat(json!({"tools": tools})), key)
        .error(400);
    assert_eq!(error["param"], "tools");
    let required = json!({"tools": tools, "tool_choice": "required"});
    let error = server.post(path, &chat(required), key).error(400);
    assert_eq!(error["param"], "tool_choice");
    let error = server
        .post(path, &chat(json!({"logprobs": true})), key)
        .error(400);
    assert_eq!(error["param"], "logprobs");
    let body = json!({"messages": [{"role": "user", "content": "x".repeat(400)}]});
    server.post(path, &body.to_string(), key).error(413);
    let error = server.post("/v1/nothing", "{}", key).error(404);
    assert_eq!(error["code"], "unknown_url");
    // No CORS without --cors: browsers keep other sites' pages from calling it.
    let origin = "http://localhost:3000";
    let answer = server.preflight(origin, path);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    let answer = server.get_from(origin, "/v1/models", "sk-test");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), None);

    // Still serving.
    let answer = server.post(path, &chat(json!({})), key);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["choices"][0]["message"]["role"], "assistant");
}

#[test]
fn a_full_queue_answers_503_and_a_client_that_leaves_frees_its_slot() {
    let server = Server::start(&["--parallel", "1", "--queue", "1", "--ctx", "32768"]);
    // A long generation holds the only slot (for seconds even in release builds); nothing but
    // its client can end it early.
    let long = json!({"prompt": "Once", "stream": true, "ignore_eos": true, "max_tokens": 32000});
    let response = server
        .request("/v1/completions", None)
        .send(long.to_string())
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: "), "{first}");
    server.wait_for_metric("moetile_active_sequences", 1.0);

    std::thread::scope(|scope| {
        // A second request waits in the queue...
        let queued = scope.spawn(|| {
            server.post(
                "/v1/completions",
                &json!({"prompt": "Once", "max_tokens": 2}).to_string(),
                None,
            )
        });
        server.wait_for_metric("moetile_queue_length", 1.0);
        // ... a third finds it full.
        let refused = server.post(
            "/v1/completions",
            &json!({"prompt": "Once", "max_tokens": 2}).to_string(),
            None,
        );
        let error = refused.error(503);
        assert_eq!(error["code"], "queue_full");
        assert_eq!(refused.header("retry-after"), Some("1"));

        // The first client leaves: its sequence stops, and the queued request gets the slot.
        drop(reader);
        let answer = queued.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    });
    server.wait_for_metric("moetile_active_sequences", 0.0);
    let metrics = server.get("/metrics").body;
    assert_eq!(metric(&metrics, "moetile_requests_rejected_total"), 1.0);
    assert!(metric(&metrics, "moetile_generated_tokens_total") < 32000.0);
}

#[test]
fn serve_flags_are_checked_before_loading() {
    let line = one_line_error(crate::moetile().args(["serve", "--cpu", "--parallel", "0"]));
    assert!(line.contains("--parallel"), "{line}");
    let line = one_line_error(crate::moetile().args(["serve", "--cpu", "--api-key", ""]));
    assert!(line.contains("--api-key"), "{line}");
    for origins in [
        "http://localhost:3000/",
        "localhost:3000",
        "*,http://a.test",
    ] {
        let line = one_line_error(crate::moetile().args(["serve", "--cpu", "--cors", origins]));
        assert!(line.contains("--cors"), "{line}");
    }
}

#[test]
fn cors_headers_go_to_the_origins_given_only() {
    let allowed = "http://localhost:3000";
    let origins = format!("{allowed}, https://chat.example");
    let server = Server::start(&["--cors", &origins, "--api-key", "sk-test"]);
    let path = "/v1/chat/completions";
    // The preflight carries no key, and is answered all the same.
    let answer = server.preflight(allowed, path);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), Some(allowed));
    let methods = answer.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = answer.header("access-control-allow-headers").unwrap();
    assert!(headers.contains("authorization"), "{headers}");
    let answer = server.get_from("https://chat.example", "/v1/models", "sk-test");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://chat.example")
    );
    // Another origin is not let in: nothing in the answer lets its page read it.
    let other = "http://localhost:3001";
    let answer = server.preflight(other, path);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    let answer = server.get_from(other, "/v1/models", "sk-test");
    assert_eq!(answer.header("access-control-allow-origin"), None);
}

#[test]
fn on_the_gpu_concurrent_answers_are_what_run_generates() {
    if crate::gpu::devices().is_none() {
        return;
    }
    let server = Server::spawn(&["-m", model_arg(), "--parallel", "2"]);
    let prompts = ["Once upon a time", "The quick brown fox"];
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                let request = json!({"prompt": p, "temperature": 0, "max_tokens": 8});
                scope.spawn(move || server.ok("/v1/completions", &request))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (prompt, v) in prompts.iter().zip(answers) {
        // The default adapter, as the server's.
        let (text, tokens) = run_greedy_on(&[], prompt, 8);
        assert_eq!(v["choices"][0]["text"], text);
        assert_eq!(v["usage"]["completion_tokens"], tokens);
    }
}

#[test]
fn a_burst_of_streaming_clients_is_answered_or_refused_and_leaves_nothing_behind() {
    let server = Server::start(&["--parallel", "4", "--queue", "8"]);
    let request = json!({"prompt": "Once upon a time", "stream": true, "max_tokens": 6});
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let (server, request) = (&server, &request);
                scope.spawn(move || {
                    let response = server
                        .request("/v1/completions", None)
                        .send(request.to_string())
                        .unwrap();
                    let status = response.status().as_u16();
                    let body = response.into_body().read_to_string().unwrap();
                    if status == 200 {
                        assert_eq!(data_lines(&body).last().unwrap(), "[DONE]");
                    }
                    status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    let answered = statuses.iter().filter(|&&s| s == 200).count();
    // The queue alone takes 8, however slow the scheduler is to take jobs into slots.
    assert!(answered >= 8, "{statuses:?}");
    server.wait_for_metric("moetile_active_sequences", 0.0);
    let metrics = server.get("/metrics").body;
    assert_eq!(metric(&metrics, "moetile_queue_length"), 0.0);
    assert_eq!(metric(&metrics, "moetile_requests_total"), answered as f64);
    assert_eq!(
        metric(&metrics, "moetile_requests_rejected_total"),
        (32 - answered) as f64
    );
    // Each slot's cache keeps one answer's prompt and tokens (for the next prompt to reuse):
    // at most 10 + 6 each.
    assert!(metric(&metrics, "moetile_kv_cache_tokens") <= 4.0 * 16.0);
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn bench_serve_measures_each_stream_count_and_counts_every_token() {
    let line = one_line_error(moetile().args(["bench", "serve", "--max-tokens", "1"]));
    assert!(line.contains("--max-tokens = 1"), "{line}");
    let server = Server::start(&["--parallel", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("serve.csv");
    let table = stdout_of(
        moetile()
            .args(["bench", "serve", "--url", &server.base, "--streams", "1,3"])
            .args(["--prompt-tokens", "8", "--max-tokens", "4", "--csv"])
            .arg(&csv),
    );
    assert!(table.contains("| streams | tokens | TTFT ms |"), "{table}");
    let mut rows = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .from_path(&csv)
        .unwrap();
    let header = rows.headers().unwrap().clone();
    let column = |row: &csv::StringRecord, name: &str| -> f64 {
        let i = header.iter().position(|h| h == name).unwrap();
        row[i].parse().unwrap_or_else(|_| panic!("{name}: {row:?}"))
    };
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, streams) in rows.iter().zip([1.0, 3.0]) {
        assert_eq!(column(row, "streams"), streams, "{row:?}");
        // ignore_eos: every request generates its 4 tokens.
        assert_eq!(column(row, "tokens"), 4.0 * streams, "{row:?}");
        assert!(column(row, "ttft_ms") > 0.0, "{row:?}");
        let batch = column(row, "batch");
        assert!((1.0..=streams).contains(&batch), "{row:?}");
    }
    // The warm-up round and the two measured ones: 3 + 1 + 3 requests.
    assert_eq!(
        metric(&server.get("/metrics").body, "moetile_requests_total"),
        7.0
    );
}

/// A chat template that offers tools the Hermes way, and renders calls and results.
const TOOLS_TEMPLATE: &str = r#"{%- if tools %}<|im_start|>system
<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools><|im_end|>
{% endif %}
{%- for message in messages %}<|im_start|>{{ message.role }}
{% if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments }}}</tool_call>{% endfor %}{% else %}{{ message.content }}{% endif %}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

#[test]
fn tools_reach_the_template_given_with_chat_template_file() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("tools.jinja");
    std::fs::write(&template, TOOLS_TEMPLATE).unwrap();
    let server = Server::start(&["--chat-template-file", template.to_str().unwrap()]);
    let tools = json!([{"type": "function", "function": {"name": "now", "parameters": {}}}]);
    let conversation = json!([
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call-0", "type": "function", "function": {"name": "now", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call-0", "content": "noon"},
    ]);
    let prompt_tokens = |extra: Value| {
        let mut body = json!({"messages": conversation, "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let v = server.ok("/v1/chat/completions", &body);
        let finish = v["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_string();
        // The random model writes no call.
        assert!(finish == "stop" || finish == "length", "{v}");
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    let plain = prompt_tokens(json!({}));
    // The definitions go into the prompt, unless tool_choice is "none".
    assert!(prompt_tokens(json!({"tools": tools})) > plain);
    assert_eq!(
        prompt_tokens(json!({"tools": tools, "tool_choice": "none"})),
        plain
    );
}
