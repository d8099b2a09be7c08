//! GPU timestamps around compute passes, for the benchmark and the stage profiler.

use crate::context::WgpuContext;
use crate::error::Result;

/// Begin/end timestamps of up to `capacity` labelled passes.
#[derive(Debug)]
pub struct Timer {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    labels: Vec<String>,
    capacity: u32,
    period_ns: f64,
}

impl Timer {
    /// A timer for `capacity` passes; `None` when the device has no `TIMESTAMP_QUERY`.
    pub fn new(ctx: &WgpuContext, capacity: u32) -> Option<Timer> {
        if !ctx.profile().timestamps {
            return None;
        }
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
            labels: Vec::new(),
            capacity,
            period_ns: ctx.queue().get_timestamp_period() as f64,
        })
    }

    /// Timestamp writes for the next pass, labelled `label`; `None` once full.
    pub(crate) fn pass_writes(
        &mut self,
        label: &str,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = self.labels.len() as u32;
        if i >= self.capacity {
            return None;
        }
        self.labels.push(label.to_string());
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Resolves the written timestamps; call once after the timed passes, in the same encoder.
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = 2 * self.labels.len() as u32;
        if n > 0 {
            enc.resolve_query_set(&self.query_set, 0..n, &self.resolve, 0);
        }
    }

    /// `(label, milliseconds)` of every timed pass, after the resolving submission; then the
    /// timer is empty again.
    pub fn read(&mut self, ctx: &WgpuContext) -> Result<Vec<(String, f64)>> {
        if self.labels.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = ctx.read_buffer(&self.resolve, "timestamps")?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let out = self
            .labels
            .drain(..)
            .enumerate()
            .map(|(i, label)| {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                (label, dt as f64 * self.period_ns / 1e6)
            })
            .collect();
        Ok(out)
    }
}

/// Begins a compute pass labelled `label`, timed when `timer` is given.
pub(crate) fn begin_pass<'e>(
    enc: &'e mut wgpu::CommandEncoder,
    label: &str,
    timer: Option<&mut Timer>,
) -> wgpu::ComputePass<'e> {
    let timestamp_writes = timer.and_then(|t| t.pass_writes(label));
    enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes,
    })
}
