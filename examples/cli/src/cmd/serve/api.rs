//! OpenAI's API shapes: request bodies parsed and checked into a [`Job`], the responses and
//! stream chunks written back, and errors as `{"error": {"message", "type", "param", "code"}}`.
//! Fields OpenAI documents that we do not act on are ignored, except those whose absence would
//! change the answer silently (`n` > 1, `logprobs`...), which are refused. Tools are offered to
//! the model through its chat template, when the template takes them; a gpt-oss (harmony)
//! model's reasoning comes back as `reasoning_content` (`answer.rs`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moetile::chat::ChatTemplate;
use moetile::sample::SamplerConfig;
use moetile::tokenizer::Tokenizer;
use serde::Deserialize;
use serde_json::{Value, json};

use super::answer::{AnswerFormat, Delta};
use super::scheduler::{Event, Finish, Job, Usage};
use super::tools::ToolCall;

/// An error answer in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    /// 400: the request is wrong; `param` names the field at fault, `code` says how.
    pub fn invalid(
        message: impl Into<String>,
        param: Option<&'static str>,
        code: Option<&'static str>,
    ) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code,
        }
    }

    /// An error of `status` with OpenAI's `type` and `code`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
        }
    }

    /// 500: the server failed.
    pub fn server(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            message,
        )
    }

    /// The `{"error": ...}` object, also sent as the last event of a stream that fails.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Slots free up within a generation; a second is a fair first wait.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What the checks of a request need to know about the model.
pub struct Limits {
    /// The name `/v1/models` lists; a request naming another model is refused.
    pub model_id: String,
    /// Tokens a slot's KV cache holds.
    pub n_ctx: usize,
    /// Token ids a prompt may use: `0..n_vocab`.
    pub n_vocab: usize,
}

/// The text side of the model: its tokenizer, chat template and answers' format.
pub struct Prompter {
    /// The model's tokenizer.
    pub tokenizer: std::sync::Arc<Tokenizer>,
    /// The model's chat template (ChatML when it has none).
    pub template: ChatTemplate,
    /// How the model writes its chat answers.
    pub format: AnswerFormat,
}

/// The two generating endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completion,
}

/// What both endpoints take besides the prompt.
#[derive(Debug, Deserialize)]
struct Options {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    stop: Option<StopField>,
    seed: Option<u64>,
    n: Option<usize>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    /// `low`, `medium` or `high`: the chat template's `reasoning_effort` (gpt-oss reads it).
    reasoning_effort: Option<String>,
    /// Refused unless off: a bool (chat) or a count (completions).
    logprobs: Option<Value>,
    top_logprobs: Option<usize>,
    echo: Option<bool>,
    best_of: Option<usize>,
    suffix: Option<String>,
    /// Not OpenAI's: generate exactly `max_tokens` (as llama.cpp's server offers), for loads
    /// and benchmarks.
    ignore_eos: Option<bool>,
    /// Not OpenAI's, llama.cpp's server's: the samplers of `moetile run`, off by default.
    top_k: Option<usize>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    messages: Vec<Message>,
    #[serde(flatten)]
    options: Options,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: Option<Content>,
    /// An assistant turn's calls, passed to the template as they are.
    tool_calls: Option<Value>,
    /// A tool result's call.
    tool_call_id: Option<String>,
    name: Option<String>,
    /// An assistant turn's reasoning, as this server returns it.
    reasoning_content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    prompt: PromptField,
    #[serde(flatten)]
    options: Options,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptField {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
}

/// A checked request: the job for the scheduler and how to answer.
pub struct Request {
    /// The prompt's tokens.
    prompt: Vec<u32>,
    sampler: SamplerConfig,
    max_tokens: usize,
    ignore_eos: bool,
    stop: Vec<String>,
    /// Whether the answer is streamed as server-sent events.
    pub stream: bool,
    /// Whether a stream ends with a chunk carrying `usage`.
    pub include_usage: bool,
    /// Whether the model was offered tools: its answer is read for calls.
    pub tools: bool,
    /// How the answer is read: a completion's text is plain whatever the model.
    pub format: AnswerFormat,
}

impl Request {
    /// The job, answering to `events`.
    pub fn job(self, events: tokio::sync::mpsc::UnboundedSender<Event>) -> Job {
        Job {
            prompt: self.prompt,
            sampler: self.sampler,
            max_tokens: self.max_tokens,
            ignore_eos: self.ignore_eos,
            stop: self.stop,
            events,
        }
    }
}

impl Endpoint {
    /// Parses and checks a request body: the prompt tokenized (chat messages through the
    /// model's template first) and every option checked against `limits`.
    pub fn parse(
        self,
        body: &[u8],
        prompter: &Prompter,
        limits: &Limits,
    ) -> Result<Request, ApiError> {
        let (prompt, options, tools, format) = match self {
            Endpoint::Chat => {
                let mut body: ChatBody = from_json(body)?;
                let format = prompter.format;
                let messages = body
                    .messages
                    .into_iter()
                    .map(chat_message)
                    .collect::<Result<Vec<_>, _>>()?;
                if messages.is_empty() {
                    return Err(ApiError::invalid(
                        "messages is empty: give at least one message",
                        Some("messages"),
                        None,
                    ));
                }
                let tools = body.options.offered_tools(&prompter.template)?;
                let effort = reasoning_effort(body.options.reasoning_effort.as_deref())?;
                let text = prompter
                    .template
                    .render_json_with(
                        &format.template_messages(messages),
                        tools.as_deref(),
                        &format.template_variables(effort),
                        true,
                    )
                    .map_err(|e| {
                        ApiError::invalid(
                            format!("the model's chat template refused the messages: {e}"),
                            Some("messages"),
                            None,
                        )
                    })?;
                let tokens = prompter.tokenizer.encode(&text, true, true);
                (tokens, body.options, tools.is_some(), format)
            }
            Endpoint::Completion => {
                let body: CompletionBody = from_json(body)?;
                if body.options.tools.is_some() {
                    return Err(ApiError::invalid(
                        "tools go with /v1/chat/completions",
                        Some("tools"),
                        Some("unsupported_value"),
                    ));
                }
                let prompt = match body.prompt {
                    PromptField::Text(text) => prompter.tokenizer.encode(&text, true, true),
                    PromptField::Texts(texts) => match <[String; 1]>::try_from(texts) {
                        Ok([text]) => prompter.tokenizer.encode(&text, true, true),
                        Err(texts) => {
                            return Err(ApiError::invalid(
                                format!(
                                    "prompt holds {} prompts: give one per request",
                                    texts.len()
                                ),
                                Some("prompt"),
                                None,
                            ));
                        }
                    },
                    PromptField::Ids(ids) => {
                        if let Some(id) = ids.iter().find(|&&id| id as usize >= limits.n_vocab) {
                            return Err(ApiError::invalid(
                                format!(
                                    "prompt holds token id {id}, outside the model's vocabulary of {} tokens",
                                    limits.n_vocab
                                ),
                                Some("prompt"),
                                None,
                            ));
                        }
                        ids
                    }
                };
                (prompt, body.options, false, AnswerFormat::Plain)
            }
        };
        options.check(prompt, limits, tools, format)
    }

    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl-",
            Endpoint::Completion => "cmpl-",
        }
    }

    /// The one choice of a response (`chunk`: of a stream chunk, whose text is a delta).
    /// Reasoning goes in `reasoning_content` (as llama.cpp's server sends it), only when
    /// there is some; a completion has none.
    fn choice(self, text: &Delta, finish: Option<Finish>, chunk: bool) -> Value {
        let finish = finish.map(Finish::name);
        match (self, chunk) {
            (Endpoint::Chat, false) => {
                let mut message = json!({"role": "assistant", "content": text.content});
                if !text.reasoning.is_empty() {
                    message["reasoning_content"] = text.reasoning.as_str().into();
                }
                json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish})
            }
            (Endpoint::Chat, true) => {
                let mut delta = json!({});
                if !text.reasoning.is_empty() {
                    delta["reasoning_content"] = text.reasoning.as_str().into();
                }
                if !text.content.is_empty() {
                    delta["content"] = text.content.as_str().into();
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            (Endpoint::Completion, _) => json!({
                "index": 0,
                "text": text.content,
                "logprobs": null,
                "finish_reason": finish,
            }),
        }
    }
}

/// Parses a JSON body, telling malformed JSON from a well-formed body of the wrong shape.
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() {
            "the request does not fit the API"
        } else {
            "the body is not valid JSON"
        };
        ApiError::invalid(format!("{what}: {e}"), None, None)
    })
}

/// A chat message as the template takes it: text parts joined (no content reads as empty),
/// `developer` read as `system`, the tool fields and `reasoning_content` kept.
fn chat_message(message: Message) -> Result<Value, ApiError> {
    let content = match message.content {
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(t)) => text.push_str(&t),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            format!(
                                "message content of type {kind:?}: only text parts are supported"
                            ),
                            Some("messages"),
                            None,
                        ));
                    }
                }
            }
            text
        }
    };
    let role = match message.role.as_str() {
        "developer" => "system".to_string(),
        _ => message.role,
    };
    let mut object = json!({"role": role, "content": content});
    if let Some(calls) = message.tool_calls {
        object["tool_calls"] = calls;
    }
    if let Some(id) = message.tool_call_id {
        object["tool_call_id"] = Value::from(id);
    }
    if let Some(name) = message.name {
        object["name"] = Value::from(name);
    }
    if let Some(reasoning) = message.reasoning_content {
        object["reasoning_content"] = Value::from(reasoning);
    }
    Ok(object)
}

/// The efforts gpt-oss's template knows (OpenAI's `reasoning_effort` values for it).
const REASONING_EFFORTS: [&str; 3] = ["low", "medium", "high"];

/// A request's `reasoning_effort`, checked whatever the template: a value gpt-oss does not
/// know would otherwise reach its system prompt as it is.
fn reasoning_effort(effort: Option<&str>) -> Result<Option<&str>, ApiError> {
    match effort {
        Some(effort) if !REASONING_EFFORTS.contains(&effort) => Err(ApiError::invalid(
            format!("reasoning_effort = {effort:?}: give one of low, medium, high"),
            Some("reasoning_effort"),
            Some("invalid_value"),
        )),
        effort => Ok(effort),
    }
}

impl Options {
    /// The tools to offer the model, taken out of the options: none without `tools` or with
    /// `tool_choice` "none". A model cannot be made to call a tool, so only "auto" is
    /// honoured besides; a template that does not take tools is refused rather than let
    /// drop them.
    fn offered_tools(&mut self, template: &ChatTemplate) -> Result<Option<Vec<Value>>, ApiError> {
        let tools = self.tools.take().filter(|tools| !tools.is_empty());
        match (tools, self.tool_choice.take()) {
            (None, _) => Ok(None),
            (Some(_), Some(choice)) if choice == "none" => Ok(None),
            (Some(_), Some(choice)) if choice != "auto" => Err(ApiError::invalid(
                format!("tool_choice = {choice}: this server honours \"auto\" and \"none\" only"),
                Some("tool_choice"),
                Some("unsupported_value"),
            )),
            (Some(_), _) if !template.offers_tools() => Err(ApiError::invalid(
                "the model's chat template does not take tools",
                Some("tools"),
                Some("unsupported_value"),
            )),
            (tools, _) => Ok(tools),
        }
    }

    /// The checked request for `prompt`; `tools`: whether the model was offered tools;
    /// `format`: how the answer is read.
    fn check(
        self,
        prompt: Vec<u32>,
        limits: &Limits,
        tools: bool,
        format: AnswerFormat,
    ) -> Result<Request, ApiError> {
        if let Some(model) = self.model.filter(|m| *m != limits.model_id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                format!(
                    "the model {model:?} is not served here; this server serves {:?}",
                    limits.model_id
                ),
            ));
        }
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::invalid(
                format!("n = {n}: this server generates one choice per request (n = 1)"),
                Some("n"),
                Some("unsupported_value"),
            ));
        }
        let logprobs_off = matches!(
            &self.logprobs,
            None | Some(Value::Null | Value::Bool(false))
        ) || self.logprobs == Some(json!(0));
        let unsupported = [
            ("logprobs", !logprobs_off),
            ("top_logprobs", self.top_logprobs.is_some_and(|n| n > 0)),
            ("echo", self.echo == Some(true)),
            ("best_of", self.best_of.is_some_and(|n| n != 1)),
            ("suffix", self.suffix.is_some_and(|s| !s.is_empty())),
        ];
        if let Some((param, _)) = unsupported.into_iter().find(|&(_, asked)| asked) {
            return Err(ApiError::invalid(
                format!("{param} is not supported by this server"),
                Some(param),
                Some("unsupported_value"),
            ));
        }
        if prompt.is_empty() {
            return Err(ApiError::invalid(
                "the prompt is empty",
                Some("prompt"),
                None,
            ));
        }
        let n_ctx = limits.n_ctx;
        if prompt.len() >= n_ctx {
            return Err(ApiError::invalid(
                format!(
                    "the prompt has {} tokens but the context holds {n_ctx}, and at least one \
                     token must follow it: shorten the prompt",
                    prompt.len()
                ),
                Some("messages"),
                Some("context_length_exceeded"),
            ));
        }
        let room = n_ctx - prompt.len();
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => room,
            Some(0) => {
                return Err(ApiError::invalid(
                    "max_tokens = 0: at least 1",
                    Some("max_tokens"),
                    Some("invalid_value"),
                ));
            }
            Some(n) if n > room => {
                return Err(ApiError::invalid(
                    format!(
                        "max_tokens = {n}, but the prompt's {} tokens leave {room} of the \
                         {n_ctx}-token context",
                        prompt.len()
                    ),
                    Some("max_tokens"),
                    Some("context_length_exceeded"),
                ));
            }
            Some(n) => n,
        };
        let sampler = SamplerConfig {
            // OpenAI's defaults; 0 is greedy.
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repeat_penalty: self.repeat_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed.unwrap_or_else(random_seed),
            ..SamplerConfig::default()
        };
        sampler
            .validate()
            .map_err(|e| ApiError::invalid(e.to_string(), None, Some("invalid_value")))?;
        let stop = match self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s],
            Some(StopField::Many(stops)) => stops,
        };
        if stop.len() > 4 {
            return Err(ApiError::invalid(
                format!("stop holds {} texts: at most 4", stop.len()),
                Some("stop"),
                Some("invalid_value"),
            ));
        }
        Ok(Request {
            prompt,
            sampler,
            max_tokens,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            tools,
            format,
        })
    }
}

/// A seed for a request that gives none: std's per-process random keys, hashed.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// What every response and chunk of one answer repeats.
pub struct Reply {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
}

impl Reply {
    /// The reply to request number `serial` of `endpoint`.
    pub fn new(endpoint: Endpoint, serial: u64, model: &str) -> Self {
        Reply {
            endpoint,
            id: format!("{}{serial}", endpoint.id_prefix()),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: model.to_string(),
        }
    }

    fn object(&self, chunk: bool, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": self.endpoint.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The whole answer.
    pub fn complete(
        &self,
        text: &Delta,
        calls: &[ToolCall],
        finish: Finish,
        usage: &Usage,
    ) -> Value {
        let mut choice = self.endpoint.choice(text, Some(finish), false);
        if !calls.is_empty() {
            let message = &mut choice["message"];
            if text.content.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = self.tool_calls(calls, false);
        }
        let mut value = self.object(false, vec![choice]);
        value["usage"] = usage_json(usage);
        value
    }

    /// The first chunk of a stream: a chat stream opens with the assistant's role.
    pub fn opening(&self) -> Option<Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.object(
                true,
                vec![json!({
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": null,
                    "finish_reason": null,
                })],
            )
        })
    }

    /// A chunk of `text`, or the closing one with `finish`.
    pub fn chunk(&self, text: &Delta, finish: Option<Finish>) -> Value {
        self.object(true, vec![self.endpoint.choice(text, finish, true)])
    }

    /// A chunk of an answer's tool calls, sent whole once the answer is complete.
    pub fn tool_calls_chunk(&self, calls: &[ToolCall]) -> Value {
        self.object(
            true,
            vec![json!({
                "index": 0,
                "delta": {"tool_calls": self.tool_calls(calls, true)},
                "logprobs": null,
                "finish_reason": null,
            })],
        )
    }

    /// OpenAI's `tool_calls` list (in a stream's delta, each with its `index`).
    fn tool_calls(&self, calls: &[ToolCall], indexed: bool) -> Value {
        let calls = calls.iter().enumerate().map(|(i, call)| {
            let mut value = json!({
                "id": format!("call-{i}-{}", self.id),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            });
            if indexed {
                value["index"] = Value::from(i);
            }
            value
        });
        Value::Array(calls.collect())
    }

    /// The chunk after the closing one that `stream_options.include_usage` asks for.
    pub fn usage_chunk(&self, usage: &Usage) -> Value {
        let mut value = self.object(true, Vec::new());
        value["usage"] = usage_json(usage);
        value
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_take_openai_shape_whole_and_streamed() {
        let reply = Reply::new(Endpoint::Chat, 7, "tiny");
        let calls = [ToolCall {
            name: "now".into(),
            arguments: "{}".into(),
        }];
        let usage = Usage {
            prompt_tokens: 5,
            cached_tokens: 2,
            completion_tokens: 3,
        };
        let v = reply.complete(&Delta::default(), &calls, Finish::ToolCalls, &usage);
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "call-0-chatcmpl-7", "type": "function",
                    "function": {"name": "now", "arguments": "{}"}}])
        );
        assert_eq!(v["usage"]["total_tokens"], 8);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
        let chunk = reply.tool_calls_chunk(&calls);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        let delta = &chunk["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(delta["index"], 0);
        assert_eq!(delta["function"]["name"], "now");
        // A third-party client reads both as calls (the random test model writes none, so
        // the server's tests cannot show it end to end).
        use async_openai::types::chat as openai;
        let whole: openai::CreateChatCompletionResponse = serde_json::from_value(v).unwrap();
        match whole.choices[0].message.tool_calls.as_deref() {
            Some([openai::ChatCompletionMessageToolCalls::Function(call)]) => {
                assert_eq!(
                    (call.id.as_str(), &call.function.name[..]),
                    ("call-0-chatcmpl-7", "now")
                );
            }
            other => panic!("not one function call: {other:?}"),
        }
        let streamed: openai::CreateChatCompletionStreamResponse =
            serde_json::from_value(chunk).unwrap();
        let delta = &streamed.choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            delta.function.as_ref().unwrap().name.as_deref(),
            Some("now")
        );
        // Without calls the message is plain text.
        let v = reply.complete(&Delta::content("hi".into()), &[], Finish::Stop, &usage);
        assert_eq!(
            v["choices"][0]["message"],
            json!({"role": "assistant", "content": "hi"})
        );
    }

    /// Reasoning goes in `reasoning_content` beside the content, whole and streamed, where a
    /// third-party client finds it; a chunk carries only the fields it has text for.
    #[test]
    fn reasoning_goes_in_reasoning_content() {
        let reply = Reply::new(Endpoint::Chat, 3, "tiny");
        let usage = Usage {
            prompt_tokens: 5,
            cached_tokens: 0,
            completion_tokens: 3,
        };
        let text = Delta {
            reasoning: "Easy.".into(),
            content: "4".into(),
        };
        let v = reply.complete(&text, &[], Finish::Stop, &usage);
        assert_eq!(
            v["choices"][0]["message"],
            json!({"role": "assistant", "content": "4", "reasoning_content": "Easy."})
        );
        let reasoning_only = Delta {
            reasoning: "Hm".into(),
            content: String::new(),
        };
        let chunk = reply.chunk(&reasoning_only, None);
        assert_eq!(
            chunk["choices"][0]["delta"],
            json!({"reasoning_content": "Hm"})
        );
        assert_eq!(
            reply.chunk(&Delta::default(), Some(Finish::Stop))["choices"][0]["delta"],
            json!({})
        );
        // A completion's text is the content.
        let completion = Reply::new(Endpoint::Completion, 4, "tiny");
        let v = completion.complete(&text, &[], Finish::Stop, &usage);
        assert_eq!(v["choices"][0]["text"], "4");
    }

    #[test]
    fn reasoning_effort_takes_gpt_oss_levels() {
        for effort in REASONING_EFFORTS {
            assert_eq!(reasoning_effort(Some(effort)).unwrap(), Some(effort));
        }
        assert_eq!(reasoning_effort(None).unwrap(), None);
        let refused = reasoning_effort(Some("max")).unwrap_err().body();
        assert_eq!(refused["error"]["param"], "reasoning_effort");
        assert_eq!(refused["error"]["code"], "invalid_value");
    }
}
