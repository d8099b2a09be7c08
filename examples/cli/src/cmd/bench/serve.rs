//! `moetile bench serve`: the decode speed of a running `moetile serve` (or any server of
//! OpenAI's `/v1/completions`) at N concurrent streaming clients.
//!
//! For each stream count N, N clients send at once one streamed request each: a prompt of
//! `--prompt-tokens` token ids (its first id not that of the 255 requests before it, so no
//! slot's prompt cache serves it), `max_tokens`, `ignore_eos` and the usage block asked for.
//! Each client notes when it sent, when each chunk carrying text came, and how many tokens the
//! usage block says were generated. A round at the largest N with 8 tokens each, untimed,
//! comes first.
//!
//! Per N: the time to the first token; each stream's decode rate (tokens after the first over
//! its first-to-last chunk time); the aggregate decode rate over the window in which every
//! stream is decoding (from the last stream's first token to the first stream's last one: the
//! prefills of a round run one after another, so before that window some streams are still
//! reading their prompts, and after it fewer than N decode); the clients' end-to-end output
//! rate; and, from the server's `/metrics` where it is a moetile server, the mean number of
//! sequences a decode pass carried.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use crate::args::{list_item, positive, usage};
use crate::cmd::COMMIT;

/// Arguments of `moetile bench serve`.
#[derive(Debug, Args)]
pub struct ServeBenchArgs {
    /// The server's address, as `moetile serve` prints it.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's API key, if it has one.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Concurrent streams to measure, comma-separated: a round of that many requests each.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,4,16,64",
          value_parser = list_item("--streams", "positive integers", positive))]
    streams: Vec<usize>,
    /// Prompt tokens of each request (ids below 256, which every vocabulary has).
    #[arg(long, value_name = "TOKENS", default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens each request generates (`max_tokens`, end-of-generation tokens ignored); at
    /// least 2.
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_tokens: usize,
    /// Seconds to wait for the server to answer `/health` (it does once its model is loaded).
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    wait: u64,
    /// Also write the rows to this CSV file (with `#` lines naming the server and settings).
    #[arg(long, value_name = "FILE.csv")]
    csv: Option<PathBuf>,
}

/// Tokens each request of the untimed first round generates.
const WARM_UP_TOKENS: usize = 8;

/// Runs `moetile bench serve`.
pub fn run(args: ServeBenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 {
        return Err(usage("invalid --prompt-tokens = 0: at least 1 token"));
    }
    if args.max_tokens < 2 {
        return Err(usage(format!(
            "invalid --max-tokens = {}: at least 2 (a decode rate needs a token after the first)",
            args.max_tokens
        )));
    }
    let server = Server::new(&args.url, args.api_key.clone());
    server.wait_until_healthy(Duration::from_secs(args.wait))?;
    let model = server.model()?;
    let warm_up = args.streams.iter().copied().max().unwrap_or(1);
    let header = [
        format!(
            "moetile {COMMIT} (client) | server: {} | model: {model}",
            server.base
        ),
        format!(
            "one request a stream: {} prompt token ids, max_tokens {} with ignore_eos, streamed; \
             a round of {} requests of {WARM_UP_TOKENS} tokens first, untimed",
            args.prompt_tokens, args.max_tokens, warm_up
        ),
        "decode tok/s: tokens generated while every stream decodes, per second of that window; \
         stream tok/s: one stream's tokens after its first per second, mean over streams; \
         output tok/s: all tokens over the round's wall time; batch: sequences a decode pass \
         carried, mean (from /metrics)"
            .to_string(),
    ];
    let mut prompts = Prompts::default();
    server.round(
        &model,
        warm_up,
        &mut prompts,
        args.prompt_tokens,
        WARM_UP_TOKENS,
    )?;

    for line in &header {
        println!("{line}");
    }
    println!(
        "\n| streams | tokens | TTFT ms | stream tok/s | decode tok/s | output tok/s | batch |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for &streams in &args.streams {
        let before = server.counters();
        let records = server.round(
            &model,
            streams,
            &mut prompts,
            args.prompt_tokens,
            args.max_tokens,
        )?;
        let batch = before
            .zip(server.counters())
            .and_then(|(before, after)| after.since(&before).mean_batch());
        let row = Row::new(&records, batch);
        println!(
            "| {} | {} | {:.1} | {:.2} | {} | {:.2} | {} |",
            row.streams,
            row.tokens,
            row.ttft_ms,
            row.stream_tps,
            row.decode_tps.map_or("-".into(), |v| format!("{v:.2}")),
            row.output_tps,
            row.batch.map_or("-".into(), |v| format!("{v:.2}")),
        );
        rows.push(row);
    }
    if let Some(path) = &args.csv {
        let records = rows
            .iter()
            .map(|r| r.csv_record(args.prompt_tokens, args.max_tokens));
        super::write_csv(path, &header, &Row::CSV_HEADER, records)?;
    }
    Ok(())
}

/// An OpenAI-compatible server.
struct Server {
    /// `http://HOST:PORT`, without a trailing `/` or `/v1`.
    base: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

impl Server {
    fn new(url: &str, api_key: Option<String>) -> Server {
        let base = url.trim_end_matches('/');
        Server {
            base: base.strip_suffix("/v1").unwrap_or(base).to_string(),
            api_key,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// Polls `/health` until it answers 200 (a server still loading its model accepts the
    /// connection and answers once loaded), for at most `wait`.
    fn wait_until_healthy(&self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .agent
                .get(format!("{}/health", self.base))
                .config()
                .timeout_global(Some(left.max(Duration::from_millis(100))))
                .build()
                .call();
            match answer {
                Ok(answer) if answer.status() == 200 => return Ok(()),
                _ if left.is_zero() => {
                    anyhow::bail!(
                        "{}/health did not answer within {} s (is `moetile serve` running there? \
                         --wait gives it longer)",
                        self.base,
                        wait.as_secs()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// `GET path` (with the key), the body as text.
    fn get(&self, path: &str) -> Result<String> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let what = format!("GET {}{path}", self.base);
        let answer = successful(request.call(), &what)?;
        answer.into_body().read_to_string().context(what)
    }

    /// The first model `/v1/models` lists: the name requests must give.
    fn model(&self) -> Result<String> {
        let body: Value = serde_json::from_str(&self.get("/v1/models")?)
            .context("reading /v1/models: not JSON")?;
        body["data"][0]["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("/v1/models lists no model: {body}"))
    }

    /// The decode counters of a moetile server's `/metrics`; `None` from another server.
    fn counters(&self) -> Option<Counters> {
        let text = self.get("/metrics").ok()?;
        let metric = |name: &str| -> Option<f64> {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))?
                .parse()
                .ok()
        };
        Some(Counters {
            decode_steps: metric("moetile_decode_tokens_total")?,
            batched_passes: metric("moetile_batched_decodes_total")?,
            batched_rows: metric("moetile_batched_decode_rows_total")?,
        })
    }

    /// Sends `streams` streamed requests at once, each of `prompt_tokens` fresh token ids and
    /// `max_tokens`, and returns what each client saw once all are answered.
    fn round(
        &self,
        model: &str,
        streams: usize,
        prompts: &mut Prompts,
        prompt_tokens: usize,
        max_tokens: usize,
    ) -> Result<Vec<Record>> {
        let bodies: Vec<String> = (0..streams)
            .map(|_| {
                json!({
                    "model": model,
                    "prompt": prompts.next(prompt_tokens),
                    "max_tokens": max_tokens,
                    "ignore_eos": true,
                    "temperature": 0,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                })
                .to_string()
            })
            .collect();
        let start = Barrier::new(streams);
        std::thread::scope(|scope| {
            let clients: Vec<_> = bodies
                .iter()
                .map(|body| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        self.stream(body)
                    })
                })
                .collect();
            clients
                .into_iter()
                .map(|client| client.join().expect("a client thread panicked"))
                .collect()
        })
    }

    /// Sends one streamed completion request and reads its answer to `[DONE]`.
    fn stream(&self, body: &str) -> Result<Record> {
        let url = format!("{}/v1/completions", self.base);
        let mut request = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let sent = Instant::now();
        let response = successful(request.send(body), &format!("POST {url}"))?;
        let (mut chunks, mut tokens) = (Vec::new(), None);
        for line in BufReader::new(response.into_body().into_reader()).lines() {
            let line = line.with_context(|| format!("reading the answer of {url}"))?;
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(data)
                .with_context(|| format!("{url} sent an event that is not JSON: {data}"))?;
            anyhow::ensure!(chunk.get("error").is_none(), "{url} failed: {data}");
            if chunk["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                chunks.push(Instant::now());
            }
            if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n as usize);
            }
        }
        let tokens = tokens.with_context(|| format!("{url} answered without a usage block"))?;
        anyhow::ensure!(!chunks.is_empty(), "{url} answered without text");
        Ok(Record {
            sent,
            chunks,
            tokens,
        })
    }
}

/// `answer` if it is a 200, else an error with its status and body (OpenAI's error says what
/// was wrong, e.g. a prompt and `max_tokens` past the server's context).
fn successful(
    answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    what: &str,
) -> Result<ureq::http::Response<ureq::Body>> {
    let answer = answer.with_context(|| what.to_string())?;
    let status = answer.status();
    if status != 200 {
        let body = answer.into_body().read_to_string().unwrap_or_default();
        anyhow::bail!("{what}: the server answered {status}: {body}");
    }
    Ok(answer)
}

/// Prompts of token ids, each starting with an id the one before did not.
#[derive(Default)]
struct Prompts {
    serial: u64,
}

impl Prompts {
    /// The next prompt of `len` ids below 256.
    fn next(&mut self, len: usize) -> Vec<u32> {
        self.serial += 1;
        // xorshift64*: the ids need only differ between prompts, not be good random numbers.
        let mut state = self.serial.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut ids: Vec<u32> = (0..len)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u32
            })
            .collect();
        ids[0] = (self.serial % 256) as u32;
        ids
    }
}

/// A moetile server's decode counters (`/metrics`).
#[derive(Debug, Clone, Copy)]
struct Counters {
    /// Decode steps of finished requests, one per sequence a pass decoded.
    decode_steps: f64,
    /// Passes that decoded several sequences at once.
    batched_passes: f64,
    /// Sequences those passes decoded.
    batched_rows: f64,
}

impl Counters {
    fn since(&self, before: &Counters) -> Counters {
        Counters {
            decode_steps: self.decode_steps - before.decode_steps,
            batched_passes: self.batched_passes - before.batched_passes,
            batched_rows: self.batched_rows - before.batched_rows,
        }
    }

    /// Sequences per decode pass: the steps over the batched passes and the steps that ran
    /// alone.
    fn mean_batch(&self) -> Option<f64> {
        let passes = self.batched_passes + (self.decode_steps - self.batched_rows);
        (passes > 0.0).then(|| self.decode_steps / passes)
    }
}

/// What one client saw of its request.
#[derive(Debug, Clone)]
struct Record {
    sent: Instant,
    /// When each chunk carrying text came.
    chunks: Vec<Instant>,
    /// Tokens generated, as the usage block counts them (a chunk may carry several tokens'
    /// text, and a token may add none yet: an unfinished UTF-8 character).
    tokens: usize,
}

impl Record {
    fn first(&self) -> Instant {
        self.chunks[0]
    }

    fn last(&self) -> Instant {
        self.chunks[self.chunks.len() - 1]
    }

    /// Tokens per chunk after the first chunk, which carries the first token.
    fn tokens_per_chunk(&self) -> f64 {
        match self.chunks.len() {
            0 | 1 => 1.0,
            n => self.tokens.saturating_sub(1) as f64 / (n - 1) as f64,
        }
    }
}

/// One stream count's results.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    streams: usize,
    /// Tokens generated, all streams.
    tokens: usize,
    /// Time to the first token, mean over streams.
    ttft_ms: f64,
    /// One stream's decode rate, mean over streams.
    stream_tps: f64,
    /// All streams' tokens per second while every one decodes; `None` when no such window
    /// exists (a stream finished before another started).
    decode_tps: Option<f64>,
    /// All tokens over the round's wall time, prefills included.
    output_tps: f64,
    /// Sequences per decode pass, mean.
    batch: Option<f64>,
}

impl Row {
    /// The CSV file's columns ([`Row::csv_record`]).
    const CSV_HEADER: [&'static str; 9] = [
        "streams",
        "prompt_tokens",
        "max_tokens",
        "tokens",
        "ttft_ms",
        "stream_tps",
        "decode_tps",
        "output_tps",
        "batch",
    ];

    /// The row as CSV fields, with the round's settings.
    fn csv_record(&self, prompt_tokens: usize, max_tokens: usize) -> [String; 9] {
        let optional = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        [
            self.streams.to_string(),
            prompt_tokens.to_string(),
            max_tokens.to_string(),
            self.tokens.to_string(),
            format!("{:.3}", self.ttft_ms),
            format!("{:.3}", self.stream_tps),
            optional(self.decode_tps),
            format!("{:.3}", self.output_tps),
            optional(self.batch),
        ]
    }

    fn new(records: &[Record], batch: Option<f64>) -> Row {
        let n = records.len() as f64;
        let ttft_ms = records
            .iter()
            .map(|r| (r.first() - r.sent).as_secs_f64() * 1e3)
            .sum::<f64>()
            / n;
        let stream_tps = records
            .iter()
            .map(|r| rate(r.tokens.saturating_sub(1) as f64, r.last() - r.first()))
            .sum::<f64>()
            / n;
        let all_decode = records.iter().map(Record::first).max();
        let one_ends = records.iter().map(Record::last).min();
        let decode_tps = all_decode.zip(one_ends).and_then(|(from, to)| {
            let tokens: f64 = records
                .iter()
                .map(|r| {
                    let inside = r.chunks.iter().filter(|&&t| t > from && t <= to).count();
                    inside as f64 * r.tokens_per_chunk()
                })
                .sum();
            (to > from).then(|| rate(tokens, to - from))
        });
        let tokens: usize = records.iter().map(|r| r.tokens).sum();
        let sent = records.iter().map(|r| r.sent).min();
        let done = records.iter().map(Record::last).max();
        let output_tps = sent
            .zip(done)
            .map_or(0.0, |(sent, done)| rate(tokens as f64, done - sent));
        Row {
            streams: records.len(),
            tokens,
            ttft_ms,
            stream_tps,
            decode_tps,
            output_tps,
            batch,
        }
    }
}

/// `tokens` per second of `time`, 0 for no time.
fn rate(tokens: f64, time: Duration) -> f64 {
    let seconds = time.as_secs_f64();
    if seconds > 0.0 { tokens / seconds } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record sent at 0 whose chunks came at `chunk_ms`, for `tokens` tokens.
    fn record(t0: Instant, chunk_ms: &[u64], tokens: usize) -> Record {
        Record {
            sent: t0,
            chunks: chunk_ms
                .iter()
                .map(|&ms| t0 + Duration::from_millis(ms))
                .collect(),
            tokens,
        }
    }

    #[test]
    fn decode_rate_counts_the_window_in_which_every_stream_decodes() {
        let t0 = Instant::now();
        // Stream a starts at 100 ms, b (its prefill after a's) at 300 ms; a chunk every 100 ms
        // each, one token a chunk; a ends at 800 ms, b at 1000 ms.
        let a = record(t0, &[100, 200, 300, 400, 500, 600, 700, 800], 8);
        let b = record(t0, &[300, 400, 500, 600, 700, 800, 900, 1000], 8);
        let row = Row::new(&[a, b], Some(1.75));
        // From 300 to 800 ms: a's chunks 400..=800 and b's 400..=800, 10 tokens in 0.5 s.
        assert!((row.decode_tps.unwrap() - 20.0).abs() < 1e-9, "{row:?}");
        assert!((row.stream_tps - 10.0).abs() < 1e-9, "{row:?}");
        assert!((row.ttft_ms - 200.0).abs() < 1e-9, "{row:?}");
        assert!((row.output_tps - 16.0).abs() < 1e-9, "{row:?}");
        assert_eq!((row.streams, row.tokens, row.batch), (2, 16, Some(1.75)));
    }

    #[test]
    fn chunks_carrying_several_tokens_count_as_the_usage_block_says() {
        let t0 = Instant::now();
        // 7 tokens after the first in 4 chunks after the first chunk.
        let row = Row::new(&[record(t0, &[10, 20, 30, 40, 50], 8)], None);
        assert!((row.decode_tps.unwrap() - 175.0).abs() < 1e-9, "{row:?}");
    }

    #[test]
    fn streams_that_never_decode_together_have_no_aggregate_rate() {
        let t0 = Instant::now();
        let a = record(t0, &[10, 20], 2);
        let b = record(t0, &[30, 40], 2);
        assert_eq!(Row::new(&[a, b], None).decode_tps, None);
    }

    #[test]
    fn mean_batch_counts_lone_decode_steps_as_passes_of_one() {
        let c = Counters {
            decode_steps: 10.0,
            batched_passes: 3.0,
            batched_rows: 8.0,
        };
        // 3 passes of 8 rows and 2 passes of one: 10 steps in 5 passes.
        assert_eq!(c.mean_batch(), Some(2.0));
    }

    #[test]
    fn prompts_differ_from_their_first_token() {
        let mut prompts = Prompts::default();
        let (a, b) = (prompts.next(4), prompts.next(4));
        assert_eq!((a.len(), b.len()), (4, 4));
        assert_ne!(a[0], b[0]);
        assert!(a.iter().chain(&b).all(|&id| id < 256));
    }
}
