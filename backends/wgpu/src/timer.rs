//! GPU timestamps around compute passes, for the benchmark and the stage profiler.
//!
//! Every timed pass records its kernel name, the forward-pass stage the timer was told it is
//! in ([`Timer::set_stage`]) and a sub-stage the op itself may set ([`Timer::set_detail`]; the
//! routed-MoE layer labels map, gate, up, act, down and sum). Pass timestamps need only
//! `TIMESTAMP_QUERY`.

use moetile::model::Stage;

use crate::context::WgpuContext;
use crate::error::Result;

/// One timed pass.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedPass {
    /// The kernel (pass label).
    pub kernel: String,
    /// The stage and layer it belonged to, if the timer was told.
    pub stage: Option<(Stage, Option<usize>)>,
    /// The sub-stage the op labelled it with.
    pub detail: Option<&'static str>,
    /// GPU time between the pass's begin and end timestamps.
    pub ms: f64,
}

/// Begin/end timestamps of up to `capacity` labelled passes.
#[derive(Debug)]
pub struct Timer {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    passes: Vec<TimedPass>,
    capacity: u32,
    period_ns: f64,
    stage: Option<(Stage, Option<usize>)>,
    detail: Option<&'static str>,
    untimed: usize,
}

impl Timer {
    /// A timer for `capacity` passes (at most 2048, half of wgpu's query-set limit); `None`
    /// when the device has no `TIMESTAMP_QUERY`.
    pub fn new(ctx: &WgpuContext, capacity: u32) -> Option<Timer> {
        if !ctx.profile().timestamps {
            return None;
        }
        let capacity = capacity.clamp(1, 2048);
        let device = ctx.device();
        let query_set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("moetile timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * capacity,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("moetile timer resolve"),
            size: 16 * capacity as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(Timer {
            query_set,
            resolve,
            passes: Vec::new(),
            capacity,
            period_ns: ctx.queue().get_timestamp_period() as f64,
            stage: None,
            detail: None,
            untimed: 0,
        })
    }

    /// Passes begun from now on belong to `stage` of `layer`; clears the detail.
    pub fn set_stage(&mut self, stage: Stage, layer: Option<usize>) {
        self.stage = Some((stage, layer));
        self.detail = None;
    }

    /// Passes begun from now on carry the sub-stage `detail` (`None` or `Some("")` clears it).
    pub fn set_detail(&mut self, detail: Option<&'static str>) {
        self.detail = detail.filter(|d| !d.is_empty());
    }

    /// Passes that found the timer full since the last [`Timer::read`].
    pub fn untimed(&self) -> usize {
        self.untimed
    }

    /// Timestamp writes for the next pass, labelled `label`; `None` once full.
    pub(crate) fn pass_writes(
        &mut self,
        label: &str,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = self.passes.len() as u32;
        if i >= self.capacity {
            self.untimed += 1;
            return None;
        }
        self.passes.push(TimedPass {
            kernel: label.to_string(),
            stage: self.stage,
            detail: self.detail,
            ms: 0.0,
        });
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Resolves the written timestamps; call once after the timed passes, in the same encoder.
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = 2 * self.passes.len() as u32;
        if n > 0 {
            enc.resolve_query_set(&self.query_set, 0..n, &self.resolve, 0);
        }
    }

    /// Every timed pass, after the resolving submission; then the timer is empty again.
    pub fn read_passes(&mut self, ctx: &WgpuContext) -> Result<Vec<TimedPass>> {
        self.untimed = 0;
        if self.passes.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = ctx.read_buffer(&self.resolve, "timestamps")?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let period_ns = self.period_ns;
        Ok(self
            .passes
            .drain(..)
            .enumerate()
            .map(|(i, mut pass)| {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                pass.ms = dt as f64 * period_ns / 1e6;
                pass
            })
            .collect())
    }

    /// `(label, milliseconds)` of every timed pass, after the resolving submission; then the
    /// timer is empty again.
    pub fn read(&mut self, ctx: &WgpuContext) -> Result<Vec<(String, f64)>> {
        Ok(self
            .read_passes(ctx)?
            .into_iter()
            .map(|p| (p.kernel, p.ms))
            .collect())
    }
}
