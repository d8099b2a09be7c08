//! The stage profiler behind `moetile profile`: GPU time per forward-pass stage and layer.
//!
//! [`crate::WgpuBackend::set_profiling`] times every compute pass with timestamp queries; the
//! forward graph's [`moetile::model::Backend::stage`] calls say which stage each pass belongs
//! to, and the routed-MoE layer labels its own sub-stages (map, gate, up, act, down, sum).
//! Timestamps are read after each submission ([`moetile::model::Backend::read`]) and summed
//! into a [`ProfileReport`].

use std::collections::{BTreeMap, BTreeSet};

use moetile::model::Stage;

use crate::context::WgpuContext;
use crate::error::{Result, WgpuError};
use crate::timer::{TimedPass, Timer};

/// Passes one submission can time (wgpu allows 4096 queries per set, two per pass).
const PASSES_PER_SUBMISSION: u32 = 2048;

/// GPU time of one (stage, layer, sub-stage) bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    /// The stage (`None` for passes outside any stage, e.g. ops an embedder ran).
    pub stage: Option<Stage>,
    /// The block (`None` for the embedding and the output head).
    pub layer: Option<usize>,
    /// The sub-stage the op labelled (MoE: map, gate, up, act, down, sum).
    pub detail: Option<&'static str>,
    /// Summed GPU milliseconds.
    pub ms: f64,
    /// Passes summed.
    pub passes: usize,
    /// The kernels that ran (their key names, e.g. `mm_id_q4k_f32_t64_reg`).
    pub kernels: BTreeSet<String>,
}

/// Per-stage GPU times gathered since profiling was enabled or last taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileReport {
    /// The adapter that ran the passes.
    pub adapter: String,
    /// One row per (stage, layer, sub-stage), in forward order.
    pub rows: Vec<ProfileRow>,
    /// Passes that ran untimed because a submission held more than the timer's capacity.
    pub untimed_passes: usize,
}

impl ProfileReport {
    /// Total GPU milliseconds of the timed passes.
    pub fn total_ms(&self) -> f64 {
        self.rows.iter().map(|r| r.ms).sum()
    }

    /// Milliseconds per (stage, sub-stage), summed over layers, in forward order.
    pub fn by_stage(&self) -> Vec<(Option<Stage>, Option<&'static str>, f64)> {
        let mut sums: BTreeMap<(Option<Stage>, Option<&'static str>), f64> = BTreeMap::new();
        for r in &self.rows {
            *sums.entry((r.stage, r.detail)).or_default() += r.ms;
        }
        sums.into_iter().map(|((s, d), ms)| (s, d, ms)).collect()
    }
}

impl std::fmt::Display for ProfileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.total_ms();
        writeln!(
            f,
            "GPU time per stage on {} (summed over layers)",
            self.adapter
        )?;
        writeln!(f, "{:<24} {:>12} {:>7}", "stage", "ms", "share")?;
        for (stage, detail, ms) in self.by_stage() {
            let name = match (stage, detail) {
                (Some(s), Some(d)) => format!("{s}/{d}"),
                (Some(s), None) => s.to_string(),
                (None, Some(d)) => format!("(none)/{d}"),
                (None, None) => "(none)".to_string(),
            };
            let share = if total > 0.0 { 100.0 * ms / total } else { 0.0 };
            writeln!(f, "{name:<24} {ms:>12.3} {share:>6.1}%")?;
        }
        write!(f, "{:<24} {total:>12.3}", "total")?;
        if self.untimed_passes > 0 {
            write!(f, "\n({} passes ran untimed)", self.untimed_passes)?;
        }
        Ok(())
    }
}

/// (stage, layer, sub-stage).
type Bucket = (Option<Stage>, Option<usize>, Option<&'static str>);

/// What one bucket has summed so far.
#[derive(Debug, Default)]
struct Sum {
    ms: f64,
    passes: usize,
    kernels: BTreeSet<String>,
}

/// A timer plus the sums of what it has read.
#[derive(Debug)]
pub(crate) struct StageProfiler {
    pub(crate) timer: Timer,
    sums: BTreeMap<Bucket, Sum>,
    untimed: usize,
}

impl StageProfiler {
    /// A profiler, or the reason there is none: the device lacks `TIMESTAMP_QUERY`.
    pub(crate) fn new(ctx: &WgpuContext) -> Result<StageProfiler> {
        let timer =
            Timer::new(ctx, PASSES_PER_SUBMISSION).ok_or_else(|| WgpuError::MissingFeature {
                adapter: ctx.profile().describe(),
                what: "the stage profiler".to_string(),
                feature: "TIMESTAMP_QUERY (GPU timestamps)".to_string(),
                fix: "profile on an adapter with timestamp queries, or time whole runs instead",
            })?;
        Ok(StageProfiler {
            timer,
            sums: BTreeMap::new(),
            untimed: 0,
        })
    }

    /// Reads the timer after the submission that resolved it and adds its passes to the sums.
    pub(crate) fn collect(&mut self, ctx: &WgpuContext) -> Result<()> {
        self.untimed += self.timer.untimed();
        for TimedPass {
            kernel,
            stage,
            detail,
            ms,
        } in self.timer.read_passes(ctx)?
        {
            let (stage, layer) = match stage {
                Some((s, l)) => (Some(s), l),
                None => (None, None),
            };
            let sum = self.sums.entry((stage, layer, detail)).or_default();
            sum.ms += ms;
            sum.passes += 1;
            sum.kernels.insert(kernel);
        }
        Ok(())
    }

    /// The report so far; the sums start again.
    pub(crate) fn take(&mut self, adapter: String) -> ProfileReport {
        let mut rows: Vec<ProfileRow> = std::mem::take(&mut self.sums)
            .into_iter()
            .map(|((stage, layer, detail), sum)| ProfileRow {
                stage,
                layer,
                detail,
                ms: sum.ms,
                passes: sum.passes,
                kernels: sum.kernels,
            })
            .collect();
        // Forward order: embedding, blocks in order (stage order within), output head.
        rows.sort_by_key(|r| {
            let block = match (r.stage, r.layer) {
                (Some(Stage::Embed), _) => 0,
                (_, Some(l)) => 1 + l,
                _ => usize::MAX,
            };
            (block, r.stage, r.detail)
        });
        ProfileReport {
            adapter,
            rows,
            untimed_passes: std::mem::take(&mut self.untimed),
        }
    }
}
