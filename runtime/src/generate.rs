//! Text generation, one bounded step at a time: the driver the `moetile` CLI and embedders share.
//!
//! A [`Generator`] makes a [`Session`] hold a prompt (keeping whatever prefix the cache already
//! holds, so a chat resends its whole conversation each turn at the cost of the new tokens
//! only), then samples and decodes until a stop condition. Each call to
//! [`step`](Generator::step) runs at most one forward pass (one prefill chunk or one decode),
//! so an application can drive it from its frame loop, or loop on a worker thread; the model
//! and backend are borrowed per call, never held. It keeps no global state: any number of
//! generators may run on any number of sessions, models and backends.
//!
//! # Driving it from an application
//!
//! A step blocks the calling thread for one forward pass: the backend records it (the first
//! use of each kernel also compiles its pipeline), submits it as one GPU submission, waits for
//! the device to finish it (and whatever was queued on the device before it) and reads the
//! logits back; sampling the token is then a pass over the vocabulary on the CPU. A prefill
//! step covers at most [`RuntimeConfig::chunk`](crate::RuntimeConfig::chunk) prompt tokens,
//! a decode step one token, so the chunk size bounds how long a step takes. Nothing runs
//! between steps. Two ways to drive it:
//!
//! - **Once per frame**: call `step` once in each frame (or only while the frame budget
//!   allows) and show [`Step::Token`] text as it comes; choose a small chunk (say 32-128) so
//!   prefill steps fit a frame.
//! - **On a worker thread**: move the model, backend and session to a thread that loops on
//!   `step` (or iterates [`Generator::steps`]) and sends the steps back over a channel; the
//!   frame loop never waits. Stop it with the cancel flag of [`StopConditions::with_cancel`]:
//!   it is read at the start of each step, so the generation stops after at most the one
//!   forward pass in flight.
//!
//! Loading ([`Model::load`](crate::model::Model::load): reads and uploads every weight) and
//! [`Session::new`] (allocates the KV cache) block for longer; do them on a worker thread or
//! behind a loading screen.
//!
//! ```
//! # use moetile::model::Backend;
//! # fn demo<B: Backend>(
//! #     model: &moetile::model::Model<B>,
//! #     backend: &mut B,
//! #     session: &mut moetile::session::Session<B>,
//! #     tokenizer: &moetile::tokenizer::Tokenizer,
//! # ) -> moetile::Result<()> {
//! use moetile::generate::{Generator, Step, StopConditions};
//! use moetile::sample::SamplerConfig;
//!
//! let prompt = tokenizer.encode("Once upon a time", true, false);
//! let stop = StopConditions::new(64, tokenizer);
//! let mut generator = Generator::new(session, tokenizer, &prompt, SamplerConfig::greedy(), stop)?;
//! let mut text = String::new();
//! while let Some(step) = generator.step(model, backend)? {
//!     match step {
//!         Step::Prefill { done, total } => eprintln!("prompt {done}/{total}"),
//!         Step::Token { text: piece, .. } => text.push_str(&piece),
//!         Step::Stopped { text: tail, .. } => text.push_str(&tail),
//!     }
//! }
//! println!("{text} ({:.1} tok/s)", generator.timings().decode_tps());
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Result;
use crate::model::{Backend, Logits, Model};
use crate::sample::{Sampler, SamplerConfig};
use crate::session::Session;
use crate::tile::TileWidth;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// When generation ends (besides the context filling up, which always ends it).
#[derive(Debug, Clone, Default)]
pub struct StopConditions {
    /// Most tokens to generate; 0 only prefills the prompt.
    pub max_tokens: usize,
    /// Tokens that end generation when sampled (not emitted): usually the tokenizer's
    /// end-of-generation set; empty generates exactly `max_tokens` (benchmarks).
    pub end_tokens: Vec<u32>,
    /// Set from any thread to stop at the next step (Ctrl-C, a UI's stop button).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl StopConditions {
    /// At most `max_tokens`, ending early at the tokenizer's end-of-generation tokens.
    pub fn new(max_tokens: usize, tokenizer: &Tokenizer) -> Self {
        StopConditions {
            max_tokens,
            end_tokens: tokenizer.end_of_generation_tokens().to_vec(),
            cancel: None,
        }
    }

    /// The same conditions, also stopping when `flag` becomes true.
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// This end-of-generation token was sampled.
    EndOfGeneration(u32),
    /// The cancel flag was set.
    Cancelled,
    /// The session's context is full.
    ContextFull,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::MaxTokens => "max tokens",
            StopReason::EndOfGeneration(_) => "end of generation",
            StopReason::Cancelled => "cancelled",
            StopReason::ContextFull => "context full",
        })
    }
}

/// What one [`Generator::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// One prefill chunk ran; `done` of `total` prompt tokens still to compute are now cached.
    Prefill {
        /// Prompt tokens computed so far (the reused prefix not counted).
        done: usize,
        /// Prompt tokens to compute.
        total: usize,
    },
    /// A token was sampled; `text` is what it completed (possibly empty: a character split
    /// across tokens is released once whole; always empty without a tokenizer).
    Token {
        /// The token id.
        id: u32,
        /// Newly complete UTF-8 text.
        text: String,
    },
    /// Generation ended; `text` is any held-back partial character, flushed. The next call
    /// returns `None`.
    Stopped {
        /// Why.
        reason: StopReason,
        /// The flushed tail (usually empty).
        text: String,
    },
}

/// Counts and clocks of one generation. Prefill covers the prompt tokens that were computed
/// (not the reused prefix); decode covers the forward passes of generated tokens. Every clock
/// stops only after the backend returned the logits, so GPU work is included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Leading prompt tokens the cache already held.
    pub reused_tokens: usize,
    /// Time to compute the rest of the prompt.
    pub prefill: Duration,
    /// From the first step to the first sampled token (prefill plus sampling).
    pub first_token: Option<Duration>,
    /// Tokens emitted (an end-of-generation token is not counted).
    pub generated_tokens: usize,
    /// Decode forward passes: one per sampled token after the first that the generation went
    /// on from.
    pub decode_steps: usize,
    /// Total time of the decode steps.
    pub decode: Duration,
    /// Time of the first decode step (often slower: first use of decode pipelines, caches).
    pub decode_first: Option<Duration>,
    /// Token-tile widths the session's routed-MoE matmuls have used.
    pub tiles_used: Vec<TileWidth>,
}

impl Timings {
    /// Prompt tokens computed (not reused).
    pub fn prefill_tokens(&self) -> usize {
        self.prompt_tokens - self.reused_tokens
    }

    /// Prefill throughput, tokens per second (0 when nothing ran).
    pub fn prefill_tps(&self) -> f64 {
        rate(self.prefill_tokens(), self.prefill)
    }

    /// Decode throughput over every decode step, tokens per second.
    pub fn decode_tps(&self) -> f64 {
        rate(self.decode_steps, self.decode)
    }

    /// Decode throughput without the first step; equals [`decode_tps`](Self::decode_tps) when
    /// there was at most one step.
    pub fn steady_decode_tps(&self) -> f64 {
        match self.decode_first {
            Some(first) if self.decode_steps > 1 => {
                rate(self.decode_steps - 1, self.decode.saturating_sub(first))
            }
            _ => self.decode_tps(),
        }
    }
}

/// `count / time` in per-second units; 0 for no time.
pub fn rate(count: usize, time: Duration) -> f64 {
    let secs = time.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

enum State {
    /// Prompt tokens `done..` of `suffix` are still to run.
    Prefill { suffix: Vec<u32>, done: usize },
    /// `token` was emitted; decoding it yields the next logits.
    Decode { token: u32 },
    /// The next call reports `Stopped` with this reason.
    Stopping(StopReason),
    /// `Stopped` was reported.
    Finished(StopReason),
}

/// Drives prefill, sampling and decode of one generation over a borrowed session.
pub struct Generator<'a, B: Backend> {
    session: &'a mut Session<B>,
    /// `None` for a model without a tokenizer: its tokens have no text.
    decoder: Option<StreamDecoder<'a>>,
    sampler: Sampler,
    stop: StopConditions,
    state: State,
    started: Option<Instant>,
    timings: Timings,
}

impl<'a, B: Backend> Generator<'a, B> {
    /// Prepares `session` to hold `prompt` (keeping the prefix it already caches and dropping
    /// the rest) and to generate from it. Fails on an empty prompt, a prompt that does not fit
    /// the context, or invalid sampler settings; nothing runs until the first step.
    ///
    /// `tokenizer` turns the generated tokens into the text of [`Step::Token`]; a model file
    /// without one ([`Tokenizer::from_gguf_opt`] is `None`) generates just as well, from a
    /// prompt of token ids, and its steps carry ids and empty text.
    pub fn new(
        session: &'a mut Session<B>,
        tokenizer: impl Into<Option<&'a Tokenizer>>,
        prompt: &[u32],
        sampler: SamplerConfig,
        stop: StopConditions,
    ) -> Result<Self> {
        // The prompt replaces what the cache holds past its shared prefix: it starts at 0.
        session.check_room(0, prompt.len())?;
        let sampler = Sampler::new(sampler)?;
        let keep = session.reusable_prefix(prompt);
        session.truncate(keep);
        Ok(Generator {
            decoder: tokenizer
                .into()
                .map(|t| t.stream_decoder().skip_control(true)),
            sampler,
            stop,
            state: State::Prefill {
                suffix: prompt[keep..].to_vec(),
                done: 0,
            },
            started: None,
            timings: Timings {
                prompt_tokens: prompt.len(),
                reused_tokens: keep,
                tiles_used: session.tiles_used().to_vec(),
                ..Timings::default()
            },
            session,
        })
    }

    /// Runs at most one forward pass and reports what happened; `None` once the generation
    /// has stopped and said so. A backend error leaves the session holding the tokens computed
    /// before it.
    pub fn step(&mut self, model: &Model<B>, backend: &mut B) -> Result<Option<Step>> {
        self.started.get_or_insert_with(Instant::now);
        if matches!(self.state, State::Prefill { .. } | State::Decode { .. }) && self.cancelled() {
            self.state = State::Stopping(StopReason::Cancelled);
        }
        let logits = match &mut self.state {
            State::Finished(_) => return Ok(None),
            State::Stopping(reason) => {
                let reason = *reason;
                return Ok(Some(self.stopped(reason)));
            }
            State::Prefill { suffix, done } => {
                let end = (*done + self.session.chunk()).min(suffix.len());
                let t0 = Instant::now();
                let logits =
                    self.session
                        .prefill(model, backend, &suffix[*done..end], Logits::Last)?;
                self.timings.prefill += t0.elapsed();
                self.timings.tiles_used = self.session.tiles_used().to_vec();
                *done = end;
                if end < suffix.len() {
                    return Ok(Some(Step::Prefill {
                        done: end,
                        total: suffix.len(),
                    }));
                }
                if self.stop.max_tokens == 0 {
                    return Ok(Some(self.stopped(StopReason::MaxTokens)));
                }
                logits
            }
            State::Decode { token } => {
                if self.session.tokens().len() >= self.session.n_ctx() {
                    return Ok(Some(self.stopped(StopReason::ContextFull)));
                }
                let t0 = Instant::now();
                let logits = self.session.decode(model, backend, *token)?;
                return Ok(Some(self.decoded(&logits, t0.elapsed())));
            }
        };
        Ok(Some(self.sample(&logits)))
    }

    /// The token the next step decodes, when that step is a decode that will run (not
    /// cancelled, with room in the context): a caller may decode it together with other
    /// generations' ([`Session::decode_batch`]) and hand the logits to
    /// [`decoded`](Self::decoded) instead of calling [`step`](Self::step).
    pub fn pending_decode(&self) -> Option<u32> {
        match self.state {
            State::Decode { token }
                if self.session.tokens().len() < self.session.n_ctx() && !self.cancelled() =>
            {
                Some(token)
            }
            _ => None,
        }
    }

    /// The session, for a caller decoding [`pending_decode`](Self::pending_decode)'s token.
    pub fn session_mut(&mut self) -> &mut Session<B> {
        self.session
    }

    /// The step after the caller decoded [`pending_decode`](Self::pending_decode)'s token
    /// into `logits`, in `took`.
    pub fn decoded(&mut self, logits: &[f32], took: Duration) -> Step {
        self.timings.tiles_used = self.session.tiles_used().to_vec();
        self.timings.decode += took;
        self.timings.decode_steps += 1;
        self.timings.decode_first.get_or_insert(took);
        self.sample(logits)
    }

    fn cancelled(&self) -> bool {
        self.stop
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Reports that generation ended for `reason`, with the text held back.
    fn stopped(&mut self, reason: StopReason) -> Step {
        self.state = State::Finished(reason);
        Step::Stopped {
            reason,
            text: self
                .decoder
                .as_mut()
                .map(StreamDecoder::finish)
                .unwrap_or_default(),
        }
    }

    /// Samples the next token from `logits` and says what it did.
    fn sample(&mut self, logits: &[f32]) -> Step {
        let id = self.sampler.sample(logits, self.session.tokens());
        if let Some(started) = self.started {
            self.timings
                .first_token
                .get_or_insert_with(|| started.elapsed());
        }
        if self.stop.end_tokens.contains(&id) {
            return self.stopped(StopReason::EndOfGeneration(id));
        }
        self.timings.generated_tokens += 1;
        self.state = if self.timings.generated_tokens >= self.stop.max_tokens {
            State::Stopping(StopReason::MaxTokens)
        } else {
            State::Decode { token: id }
        };
        Step::Token {
            id,
            text: self
                .decoder
                .as_mut()
                .map(|d| d.push(id))
                .unwrap_or_default(),
        }
    }

    /// Steps until the next token; `None` once stopped (see
    /// [`stop_reason`](Self::stop_reason)). Text held back at the stop is dropped: use
    /// [`step`](Self::step) to get it.
    pub fn next_token(&mut self, model: &Model<B>, backend: &mut B) -> Result<Option<u32>> {
        while let Some(step) = self.step(model, backend)? {
            if let Step::Token { id, .. } = step {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The remaining steps as an iterator: each item is what [`step`](Self::step) returned,
    /// ending after [`Step::Stopped`] or after the first error.
    pub fn steps<'g>(&'g mut self, model: &'g Model<B>, backend: &'g mut B) -> Steps<'g, 'a, B> {
        Steps {
            generator: self,
            model,
            backend,
            failed: false,
        }
    }

    /// Why the generation stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self.state {
            State::Stopping(reason) | State::Finished(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether [`step`](Self::step) has reported [`Step::Stopped`].
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished(_))
    }

    /// Counts and clocks so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Ends the generation (finished or not) and hands back the session, holding every token
    /// computed so far: a server keeps it for the next request, whose prompt may start with
    /// those tokens.
    pub fn into_session(self) -> &'a mut Session<B> {
        self.session
    }
}

/// The steps of a [`Generator`] as an iterator (see [`Generator::steps`]).
pub struct Steps<'g, 'a, B: Backend> {
    generator: &'g mut Generator<'a, B>,
    model: &'g Model<B>,
    backend: &'g mut B,
    failed: bool,
}

impl<B: Backend> Iterator for Steps<'_, '_, B> {
    type Item = Result<Step>;

    fn next(&mut self) -> Option<Result<Step>> {
        if self.failed {
            return None;
        }
        let step = self.generator.step(self.model, self.backend).transpose();
        self.failed = matches!(step, Some(Err(_)));
        step
    }
}
