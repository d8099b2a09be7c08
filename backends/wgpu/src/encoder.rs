//! [`Encoder`]: a command encoder with its own arena of uniform parameters.
//!
//! Kernel parameters are small `#[repr(C)]` structs; creating a buffer for each of hundreds of
//! dispatches per forward pass is wasteful. An encoder appends them to host-side chunks (each
//! slot aligned to the device's uniform offset alignment) and binds each dispatch to its slot;
//! `WgpuContext::submit_encoder` writes every chunk with one queue write before the
//! submission and returns the arena to the context for the next encoder. The writes land before
//! the submission's commands and after everything submitted earlier, so a reused chunk never
//! changes under commands that read it.

use std::num::NonZeroU64;

use moetile_codegen::params::WgslParams;

use crate::pool::BufferPool;

/// Bytes per parameter chunk buffer.
const CHUNK_BYTES: u64 = 64 * 1024;

/// Host copies of the parameter chunks of one encoder.
#[derive(Debug)]
pub(crate) struct ParamArena {
    chunks: Vec<(wgpu::Buffer, Vec<u8>)>,
    /// The chunk being filled.
    current: usize,
    align: u64,
}

impl ParamArena {
    pub(crate) fn new(align: u32) -> ParamArena {
        ParamArena {
            chunks: Vec::new(),
            current: 0,
            align: u64::from(align.max(16)),
        }
    }

    fn push(&mut self, device: &wgpu::Device, bytes: &[u8]) -> ParamSlot {
        let size = bytes.len() as u64;
        let end = |host: &Vec<u8>| (host.len() as u64).next_multiple_of(self.align) + size;
        if self
            .chunks
            .get(self.current)
            .is_some_and(|(_, host)| end(host) > CHUNK_BYTES)
        {
            self.current += 1;
        }
        if self.current == self.chunks.len() {
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("moetile params"),
                size: CHUNK_BYTES,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.chunks
                .push((buffer, Vec::with_capacity(CHUNK_BYTES as usize)));
        }
        let (buffer, host) = &mut self.chunks[self.current];
        let offset = (host.len() as u64).next_multiple_of(self.align);
        host.resize(offset as usize, 0);
        host.extend_from_slice(bytes);
        ParamSlot {
            buffer: buffer.clone(),
            offset,
            size: NonZeroU64::new(size).expect("params structs are not empty"),
        }
    }

    /// Writes every chunk used since the last reset, one queue write each.
    pub(crate) fn flush(&self, queue: &wgpu::Queue) {
        for (buffer, host) in &self.chunks[..self.chunks.len().min(self.current + 1)] {
            if !host.is_empty() {
                queue.write_buffer(buffer, 0, host);
            }
        }
    }

    /// Forgets the contents, keeping the chunk buffers for the next encoder.
    pub(crate) fn reset(&mut self) {
        for (_, host) in &mut self.chunks {
            host.clear();
        }
        self.current = 0;
    }
}

/// One dispatch's parameters: a slot of a chunk buffer.
#[derive(Debug, Clone)]
pub struct ParamSlot {
    buffer: wgpu::Buffer,
    offset: u64,
    size: NonZeroU64,
}

impl ParamSlot {
    /// The slot as a uniform binding.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: Some(self.size),
        })
    }
}

/// A command encoder that also collects the parameters of the dispatches it records, and
/// keeps one compute pass open across dispatches. It dereferences to [`wgpu::CommandEncoder`]
/// for copies, clears and passes of its user (mutable access ends the open pass); submit it
/// with `WgpuContext::submit_encoder` (a plain `finish` would lose the parameters).
///
/// Why one pass: wgpu records each compute pass into command buffers of its own when the
/// encoder finishes, which costs ~25 us of host time per pass on the H100's Vulkan driver,
/// far more than the small kernels of a decode step take on the GPU. Inside a pass wgpu still
/// places a barrier between dispatches that share a written buffer.
#[derive(Debug)]
pub(crate) struct Encoder {
    pub(crate) inner: wgpu::CommandEncoder,
    pub(crate) arena: ParamArena,
    /// Where buffers allocated while encoding (expert maps, router outputs) come from.
    pub(crate) pool: BufferPool,
    /// Dispatch groups recorded so far (one per [`Encoder::pass`] call).
    pub(crate) steps: usize,
    /// The open pass; `timed` ones (with timestamp writes) serve one step only.
    pass: Option<OpenPass>,
    device: wgpu::Device,
}

#[derive(Debug)]
struct OpenPass {
    pass: wgpu::ComputePass<'static>,
    timed: bool,
}

impl Encoder {
    pub(crate) fn new(
        device: &wgpu::Device,
        label: &str,
        arena: ParamArena,
        pool: BufferPool,
    ) -> Encoder {
        Encoder {
            inner: device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) }),
            arena,
            pool,
            steps: 0,
            pass: None,
            device: device.clone(),
        }
    }

    /// A slot holding `params`, valid for the dispatches of this encoder.
    pub(crate) fn params<P: WgslParams>(&mut self, params: &P) -> ParamSlot {
        self.arena.push(&self.device, bytemuck::bytes_of(params))
    }

    /// The pass the next dispatches go into: the open one, or with `timestamps` a new pass of
    /// their own (labelled `label`) so that exactly they are timed.
    pub(crate) fn pass(
        &mut self,
        label: &str,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> &mut wgpu::ComputePass<'static> {
        self.steps += 1;
        let timed = timestamps.is_some();
        if timed || self.pass.as_ref().is_none_or(|p| p.timed) {
            self.end_pass();
            let pass = self
                .inner
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(if timed { label } else { "moetile" }),
                    timestamp_writes: timestamps,
                })
                .forget_lifetime();
            self.pass = Some(OpenPass { pass, timed });
        }
        &mut self.pass.as_mut().expect("opened above").pass
    }

    /// Ends the open pass, if any, so the encoder takes other commands or finishes.
    pub(crate) fn end_pass(&mut self) {
        self.pass = None;
    }
}

impl std::ops::Deref for Encoder {
    type Target = wgpu::CommandEncoder;

    fn deref(&self) -> &wgpu::CommandEncoder {
        &self.inner
    }
}

impl std::ops::DerefMut for Encoder {
    fn deref_mut(&mut self) -> &mut wgpu::CommandEncoder {
        self.end_pass();
        &mut self.inner
    }
}
