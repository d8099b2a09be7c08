//! The scheduler: the one thread that runs the model. It takes queued [`Job`]s into free slots
//! (each slot a session with its own KV cache) and steps the active ones round-robin, one
//! forward pass each (a prefill chunk or a decode step), so a new request's prefill delays a
//! running one by at most a chunk. Text goes back over each job's own channel; a job whose
//! receiver is gone (the client disconnected) is cancelled at its next step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use moetile::generate::{Generator, Step, StopConditions, StopReason};
use moetile::model::{Backend, Model};
use moetile::sample::SamplerConfig;
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;
use super::watch::TextWatch;

/// A checked request, ready to run.
pub struct Job {
    /// The prompt's tokens: at least one, fewer than the context holds.
    pub prompt: Vec<u32>,
    /// How tokens are drawn (validated).
    pub sampler: SamplerConfig,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Whether end-of-generation tokens are ignored (a fixed number of tokens, for loads).
    pub ignore_eos: bool,
    /// Texts that end the answer, left out of it.
    pub stop: Vec<String>,
    /// Where the answer goes.
    pub events: UnboundedSender<Event>,
}

/// What the scheduler tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// More of the answer (never empty).
    Text(String),
    /// The answer is complete.
    Done {
        /// Why it ended.
        finish: Finish,
        /// Its token counts.
        usage: Usage,
    },
    /// The backend failed while running the request.
    Failed(String),
}

/// Why an answer ended, as OpenAI's `finish_reason` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop text.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
    /// The answer called tools (found by the HTTP side, which reads the calls).
    ToolCalls,
}

impl Finish {
    /// The `finish_reason` value.
    pub fn name(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
}

/// The token counts of one answer (`usage` in the responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Leading prompt tokens the slot's KV cache already held.
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

/// A generation in a slot.
struct Sequence<'a, B: Backend> {
    generator: Generator<'a, B>,
    stop: TextWatch,
    events: UnboundedSender<Event>,
    /// Set once the client is gone: the generator stops at its next step.
    cancel: Arc<AtomicBool>,
}

enum Slot<'a, B: Backend> {
    Idle(&'a mut Session<B>),
    Busy(Box<Sequence<'a, B>>),
}

/// Runs the model for every request: see the module's documentation.
pub struct Scheduler<'a, B: Backend> {
    model: &'a Model<B>,
    backend: &'a mut B,
    tokenizer: &'a Tokenizer,
    /// `None` while a slot changes state, and for good once a failed start lost its session.
    slots: Vec<Option<Slot<'a, B>>>,
    metrics: &'a Metrics,
}

impl<'a, B: Backend> Scheduler<'a, B> {
    /// A scheduler with one slot per session.
    pub fn new(
        model: &'a Model<B>,
        backend: &'a mut B,
        tokenizer: &'a Tokenizer,
        sessions: &'a mut [Session<B>],
        metrics: &'a Metrics,
    ) -> Self {
        Scheduler {
            model,
            backend,
            tokenizer,
            slots: sessions.iter_mut().map(|s| Some(Slot::Idle(s))).collect(),
            metrics,
        }
    }

    /// Serves `jobs` until every sender is gone (the HTTP side stopped). Waits without
    /// spinning while no sequence is active. Fails if every slot was lost.
    pub fn run(mut self, jobs: &Receiver<Job>) -> anyhow::Result<()> {
        loop {
            anyhow::ensure!(
                self.slots.iter().any(Option::is_some),
                "every slot was lost to a failed start (see the warnings above)"
            );
            while self.slots.iter().any(|s| matches!(s, Some(Slot::Idle(_)))) {
                let next = if self.active() == 0 {
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return Ok(()),
                    }
                } else {
                    match jobs.try_recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                };
                self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                self.start(next);
            }
            let decoded = self.decode_together();
            for i in 0..self.slots.len() {
                if !decoded.contains(&i) {
                    self.step(i);
                }
            }
            self.publish_kv();
        }
    }

    fn active(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Some(Slot::Busy(_))))
            .count()
    }

    /// Starts `job` in the idle slot whose cache shares the longest prefix with its prompt
    /// (among equals, the one caching least, to keep the others' prefixes for later).
    fn start(&mut self, job: Job) {
        if job.events.is_closed() {
            return;
        }
        let best = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Some(Slot::Idle(session)) => Some((
                    i,
                    session.reusable_prefix(&job.prompt),
                    session.tokens().len(),
                )),
                _ => None,
            })
            .max_by_key(|&(_, shared, cached)| (shared, std::cmp::Reverse(cached)));
        let Some((i, ..)) = best else { return };
        let Some(Slot::Idle(session)) = self.slots[i].take() else {
            return;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let mut stop =
            StopConditions::new(job.max_tokens, self.tokenizer).with_cancel(cancel.clone());
        if job.ignore_eos {
            stop.end_tokens.clear();
        }
        match Generator::new(session, self.tokenizer, &job.prompt, job.sampler, stop) {
            Ok(generator) => {
                self.metrics.active.fetch_add(1, Ordering::Relaxed);
                self.slots[i] = Some(Slot::Busy(Box::new(Sequence {
                    generator,
                    stop: TextWatch::new(job.stop),
                    events: job.events,
                    cancel,
                })));
            }
            // The HTTP side checks the prompt and sampler as `Generator::new` does, so this
            // is not expected; the session went with the failed call, so the slot is gone.
            Err(e) => {
                eprintln!("warning: a slot is lost: {e}");
                let _ = job.events.send(Event::Failed(e.to_string()));
            }
        }
    }

    /// Where the backend [batches sequences](Backend::batches_sequences), decodes the next
    /// token of every sequence whose next step is a decode in one forward pass (when there are
    /// at least two); returns the slots it stepped.
    fn decode_together(&mut self) -> Vec<usize> {
        if !self.backend.batches_sequences() {
            return Vec::new();
        }
        let mut batch = Vec::new();
        let mut tokens = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(Slot::Busy(seq)) = slot {
                notice_leaving(seq);
                if let Some(token) = seq.generator.pending_decode() {
                    batch.push(i);
                    tokens.push(token);
                }
            }
        }
        if batch.len() < 2 {
            return Vec::new();
        }
        let start = Instant::now();
        let logits = {
            let mut sessions: Vec<&mut Session<B>> = self
                .slots
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| batch.contains(i))
                .filter_map(|(_, slot)| match slot {
                    Some(Slot::Busy(seq)) => Some(seq.generator.session_mut()),
                    _ => None,
                })
                .collect();
            Session::decode_batch(self.model, self.backend, &mut sessions, &tokens)
        };
        let took = start.elapsed();
        self.metrics.add_batch(batch.len());
        match logits {
            Ok(logits) => {
                for (&i, logits) in batch.iter().zip(&logits) {
                    if let Some(Slot::Busy(seq)) = &mut self.slots[i] {
                        let step = seq.generator.decoded(logits, took);
                        self.react(i, Ok(Some(step)));
                    }
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                for &i in &batch {
                    self.finish(i, Err(message.clone()));
                }
            }
        }
        batch
    }

    /// Runs one step of slot `i`'s sequence, if it has one.
    fn step(&mut self, i: usize) {
        let Some(Slot::Busy(seq)) = &mut self.slots[i] else {
            return;
        };
        notice_leaving(seq);
        let step = seq.generator.step(self.model, self.backend);
        self.react(i, step);
    }

    /// Passes what slot `i`'s generator did on to its client, and ends the sequence when it
    /// ended.
    fn react(&mut self, i: usize, step: moetile::Result<Option<Step>>) {
        let Some(Slot::Busy(seq)) = &mut self.slots[i] else {
            return;
        };
        let end = match step {
            Ok(Some(Step::Prefill { .. })) => return,
            Ok(Some(Step::Token { text, .. })) => {
                self.metrics
                    .generated_tokens
                    .fetch_add(1, Ordering::Relaxed);
                let (out, stopped) = seq.stop.push(&text);
                send_text(&seq.events, out);
                if !stopped {
                    return;
                }
                Ok(Finish::Stop)
            }
            Ok(Some(Step::Stopped { reason, text })) => {
                let (out, stopped) = seq.stop.push(&text);
                send_text(&seq.events, out);
                if stopped {
                    // The stop text and what follows it are left out.
                    return self.finish(i, Ok(Finish::Stop));
                }
                // The start of a stop text that never came is part of the answer.
                send_text(&seq.events, seq.stop.take());
                Ok(match reason {
                    StopReason::EndOfGeneration(_) => Finish::Stop,
                    StopReason::MaxTokens | StopReason::ContextFull | StopReason::Cancelled => {
                        Finish::Length
                    }
                })
            }
            // `step` says `Stopped` before it says `None`.
            Ok(None) => Ok(Finish::Length),
            Err(e) => Err(format!("{e:#}")),
        };
        self.finish(i, end);
    }

    /// Ends slot `i`'s sequence: tells its client how (unless it is gone), counts it, and
    /// keeps the session, and so its cache, for the next request. After a backend error the
    /// cache is not trusted and is emptied.
    fn finish(&mut self, i: usize, end: Result<Finish, String>) {
        let Some(Slot::Busy(seq)) = self.slots[i].take() else {
            return;
        };
        let Sequence {
            generator, events, ..
        } = *seq;
        let t = generator.timings().clone();
        self.metrics.add_timings(&t);
        self.metrics.active.fetch_sub(1, Ordering::Relaxed);
        let session = generator.into_session();
        let event = match end {
            Ok(finish) => Event::Done {
                finish,
                usage: Usage {
                    prompt_tokens: t.prompt_tokens,
                    cached_tokens: t.reused_tokens,
                    completion_tokens: t.generated_tokens,
                },
            },
            Err(message) => {
                session.reset();
                Event::Failed(message)
            }
        };
        let _ = events.send(event);
        self.slots[i] = Some(Slot::Idle(session));
    }

    /// Publishes how many tokens the slots' KV caches hold.
    fn publish_kv(&self) {
        let held: usize = self
            .slots
            .iter()
            .map(|s| match s {
                Some(Slot::Idle(session)) => session.tokens().len(),
                // A busy slot's session is inside its generator; its prompt and answer so far.
                Some(Slot::Busy(seq)) => {
                    let t = seq.generator.timings();
                    t.prompt_tokens + t.generated_tokens
                }
                None => 0,
            })
            .sum();
        self.metrics.kv_tokens.store(held, Ordering::Relaxed);
    }
}

/// Cancels `seq` at its next step if its client is gone.
fn notice_leaving<B: Backend>(seq: &Sequence<'_, B>) {
    if seq.events.is_closed() {
        seq.cancel.store(true, Ordering::Relaxed);
    }
}

/// Sends `text` unless it is empty; a client that is gone is noticed at the next step.
fn send_text(events: &UnboundedSender<Event>, text: String) {
    if !text.is_empty() {
        let _ = events.send(Event::Text(text));
    }
}
