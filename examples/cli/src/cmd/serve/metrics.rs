//! The server's counters and gauges, written by the HTTP side and the scheduler without locks
//! and read by `GET /metrics` in Prometheus' text format. Speeds are exported as counters of
//! tokens and of seconds, so a dashboard computes them over the window it wants
//! (`rate(moetile_decode_tokens_total[1m]) / rate(moetile_decode_seconds_total[1m])`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use moetile::generate::Timings;

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests queued for the scheduler.
    pub requests: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Sequences being generated.
    pub active: AtomicUsize,
    /// Slots (`--parallel`).
    pub slots: usize,
    /// Tokens the slots' KV caches can hold in all.
    pub kv_capacity: usize,
    /// Tokens the slots' KV caches hold now.
    pub kv_tokens: AtomicUsize,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    /// Tokens generated so far (counted as they come).
    pub generated_tokens: AtomicU64,
    prefill_us: AtomicU64,
    decode_tokens: AtomicU64,
    decode_us: AtomicU64,
    batched_decodes: AtomicU64,
    batched_rows: AtomicU64,
}

impl Metrics {
    /// Metrics of a server with `slots` slots of `n_ctx` tokens each.
    pub fn new(slots: usize, n_ctx: usize) -> Self {
        Metrics {
            slots,
            kv_capacity: slots * n_ctx,
            ..Metrics::default()
        }
    }

    /// Adds the counts and clocks of a finished generation.
    pub fn add_timings(&self, t: &Timings) {
        let add = |counter: &AtomicU64, value: u64| counter.fetch_add(value, Ordering::Relaxed);
        add(&self.prompt_tokens, t.prompt_tokens as u64);
        add(&self.cached_tokens, t.reused_tokens as u64);
        add(&self.prefill_us, t.prefill.as_micros() as u64);
        add(&self.decode_tokens, t.decode_steps as u64);
        add(&self.decode_us, t.decode.as_micros() as u64);
    }

    /// Counts a forward pass that decoded `rows` sequences at once.
    pub fn add_batch(&self, rows: usize) {
        self.batched_decodes.fetch_add(1, Ordering::Relaxed);
        self.batched_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let count = |v: &AtomicU64| v.load(Ordering::Relaxed) as f64;
        let gauge = |v: &AtomicUsize| v.load(Ordering::Relaxed) as f64;
        let seconds = |v: &AtomicU64| v.load(Ordering::Relaxed) as f64 / 1e6;
        #[rustfmt::skip]
        let rows: [(&str, &str, &str, f64); 15] = [
            ("requests_total", "counter", "Requests queued for generation.", count(&self.requests)),
            ("requests_rejected_total", "counter", "Requests refused with 503 because the queue was full.", count(&self.rejected)),
            ("queue_length", "gauge", "Requests waiting for a free slot.", gauge(&self.queued)),
            ("active_sequences", "gauge", "Sequences being generated.", gauge(&self.active)),
            ("slots", "gauge", "Sequences that can be generated at once (--parallel).", self.slots as f64),
            ("prompt_tokens_total", "counter", "Prompt tokens of finished requests.", count(&self.prompt_tokens)),
            ("prompt_tokens_cached_total", "counter", "Prompt tokens reused from a slot's KV cache.", count(&self.cached_tokens)),
            ("generated_tokens_total", "counter", "Tokens generated.", count(&self.generated_tokens)),
            ("prefill_seconds_total", "counter", "Time spent computing prompt tokens not cached.", seconds(&self.prefill_us)),
            ("decode_tokens_total", "counter", "Decode steps (one token each) of finished requests.", count(&self.decode_tokens)),
            ("decode_seconds_total", "counter", "Time spent in decode steps, summed over sequences (a pass decoding several counts for each).", seconds(&self.decode_us)),
            ("batched_decodes_total", "counter", "Forward passes that decoded several sequences at once.", count(&self.batched_decodes)),
            ("batched_decode_rows_total", "counter", "Sequences decoded by those passes, in all.", count(&self.batched_rows)),
            ("kv_cache_tokens", "gauge", "Tokens the slots' KV caches hold, a busy slot's whole prompt counted from its start.", gauge(&self.kv_tokens)),
            ("kv_cache_capacity_tokens", "gauge", "Tokens the slots' KV caches can hold.", self.kv_capacity as f64),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP moetile_{name} {help}\n# TYPE moetile_{name} {kind}\nmoetile_{name} {value}"
            );
        }
        out
    }
}
