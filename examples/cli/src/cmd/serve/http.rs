//! The HTTP side (axum on tokio): routes, the API key check, and turning a request into a job
//! on the scheduler's bounded queue and its events into a response, whole or as server-sent
//! events. Nothing here touches the model: tokenizing and rendering the chat template are the
//! only work done on the runtime's threads.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::answer::{AnswerText, Delta};
use super::api::{ApiError, Endpoint, Limits, Prompter, Reply};
use super::metrics::Metrics;
use super::scheduler::{Event, Job};

/// What the handlers share.
pub struct AppState {
    /// The scheduler's queue (bounded by `--queue`).
    pub jobs: SyncSender<Job>,
    /// Tokenizer and chat template.
    pub prompter: Prompter,
    /// What requests are checked against.
    pub limits: Limits,
    /// `--api-key`, if set.
    pub api_key: Option<String>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Numbers the responses' ids.
    serial: AtomicU64,
}

impl AppState {
    /// The state of a server queueing onto `jobs`.
    pub fn new(
        jobs: SyncSender<Job>,
        prompter: Prompter,
        limits: Limits,
        api_key: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AppState {
            jobs,
            prompter,
            limits,
            api_key,
            metrics,
            serial: AtomicU64::new(1),
        }
    }

    /// Queues `job`, or refuses it with 503 when the queue is full.
    fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.metrics.requests.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => {
                        self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "server_error",
                            Some("queue_full"),
                            "every slot is busy and the queue is full: retry later",
                        )
                    }
                    TrySendError::Disconnected(_) => ApiError::server("the scheduler has stopped"),
                })
            }
        }
    }
}

/// The server's routes; the `/v1` ones behind the API key when one is set, every one taking
/// bodies of at most `max_body` bytes. With `cors` (`--cors`), browsers' preflight requests
/// are answered before the key is checked (they never carry it), and answers to the origins
/// it lets in say so.
pub fn router(state: Arc<AppState>, max_body: usize, cors: Option<AllowOrigin>) -> Router {
    let router = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    match cors {
        Some(origins) => router.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST])
                // OpenAI's SDKs send headers of their own besides the key and the type.
                .allow_headers(AllowHeaders::mirror_request())
                .max_age(Duration::from_secs(600)),
        ),
        None => router,
    }
}

/// Lets a request through only with `Authorization: Bearer KEY` when `--api-key` is set.
async fn authorize(
    State(state): State<Arc<AppState>>,
    request: HttpRequest,
    next: Next,
) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(given.as_bytes(), key.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "missing or wrong API key: send the server's --api-key as `Authorization: Bearer KEY`",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Compares in time that depends on the lengths only, so timing does not reveal how much of
/// a guessed key is right.
fn same_secret(given: &[u8], key: &[u8]) -> bool {
    given.len() == key.len() && given.iter().zip(key).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn chat(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    generate(&state, Endpoint::Chat, body).await
}

async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(&state, Endpoint::Completion, body).await
}

/// Checks the request, queues it, and answers from its events.
async fn generate(
    state: &AppState,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let body = body
            .map_err(|e| ApiError::new(e.status(), "invalid_request_error", None, e.body_text()))?;
        let request = endpoint.parse(&body, &state.prompter, &state.limits)?;
        let reply = Reply::new(
            endpoint,
            state.serial.fetch_add(1, Ordering::Relaxed),
            &state.limits.model_id,
        );
        let (stream, include_usage) = (request.stream, request.include_usage);
        let text = AnswerText::new(request.format, request.tools);
        let (events, receiver) = unbounded_channel();
        state.submit(request.job(events))?;
        Ok(if stream {
            Sse::new(sse(reply, receiver, text, include_usage)).into_response()
        } else {
            Json(collect(&reply, receiver, text).await?).into_response()
        })
    };
    answer.await.unwrap_or_else(ApiError::into_response)
}

/// The whole answer, once the scheduler has finished it.
async fn collect(
    reply: &Reply,
    mut events: UnboundedReceiver<Event>,
    mut answer: AnswerText,
) -> Result<Value, ApiError> {
    let mut text = Delta::default();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(piece) => text.push(answer.push(piece)),
            Event::Done { finish, usage } => {
                let (rest, calls, finish) = answer.finish(finish);
                text.push(rest);
                return Ok(reply.complete(&text, &calls, finish, &usage));
            }
            Event::Failed(message) => return Err(ApiError::server(message)),
        }
    }
    Err(ApiError::server("the scheduler dropped the request"))
}

/// The answer as server-sent events: a chunk per piece of text (content or reasoning), one of
/// the tool calls (if the answer made some), the closing chunk with its `finish_reason`, the
/// usage chunk if asked for, then `[DONE]`. A failure mid-stream is sent
/// as an `{"error": ...}` event. Dropping the stream (the client left) drops `events`, which
/// the scheduler notices.
fn sse(
    reply: Reply,
    events: UnboundedReceiver<Event>,
    mut answer: AnswerText,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let opening = reply.opening();
    let events = stream::unfold(events, |mut events| async {
        events.recv().await.map(|event| (event, events))
    });
    let chunks = events.flat_map(move |event| {
        let chunks = match event {
            Event::Text(piece) => {
                let piece = answer.push(piece);
                let chunk = (!piece.is_empty()).then(|| reply.chunk(&piece, None));
                chunk.into_iter().collect()
            }
            Event::Done { finish, usage } => {
                let (rest, calls, finish) = answer.finish(finish);
                let mut chunks = Vec::new();
                if !rest.is_empty() {
                    chunks.push(reply.chunk(&rest, None));
                }
                if !calls.is_empty() {
                    chunks.push(reply.tool_calls_chunk(&calls));
                }
                chunks.push(reply.chunk(&Delta::default(), Some(finish)));
                if include_usage {
                    chunks.push(reply.usage_chunk(&usage));
                }
                chunks
            }
            Event::Failed(message) => vec![ApiError::server(message).body()],
        };
        stream::iter(chunks)
    });
    stream::iter(opening)
        .chain(chunks)
        .map(|chunk| SseEvent::default().data(chunk.to_string()))
        .chain(stream::once(async { SseEvent::default().data("[DONE]") }))
        .map(Ok)
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.limits.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "moetile",
        }],
    }))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("unknown_url"),
        "no such endpoint: see /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics",
    )
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"sk-123", b"sk-123"));
        assert!(!same_secret(b"sk-124", b"sk-123"));
        assert!(!same_secret(b"sk-12", b"sk-123"));
        assert!(!same_secret(b"", b"sk-123"));
    }
}
