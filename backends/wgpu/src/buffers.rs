//! Where ops' buffers come from: [`Buffers`] pairs the context's device with one stream's pool
//! (see [`crate::pool`]), so every allocation names the stream it belongs to; [`GpuMatrix`] is
//! the activation matrix every op reads and writes.

use moetile_codegen::ActType;

use crate::context::WgpuContext;
use crate::error::{Result, WgpuError};
use crate::pool::{BufferPool, PooledBuffer, bucket};

/// A row-major activation matrix on the device: f32, or f16 stored two per `u32` word.
#[derive(Debug)]
pub struct GpuMatrix {
    pub(crate) buffer: PooledBuffer,
    /// Rows (tokens, or (token, k) pairs).
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// Element type.
    pub ty: ActType,
}

impl GpuMatrix {
    /// The buffer (for embedders binding it in their own passes).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// Allocation from one stream's pool on a context: [`WgpuContext::buffers`] (the context's
/// own pool, for buffers made outside encoders), [`crate::Recorder::buffers`] (the encoder's),
/// or a backend's.
#[derive(Debug, Clone, Copy)]
pub struct Buffers<'a> {
    pub(crate) ctx: &'a WgpuContext,
    pub(crate) pool: &'a BufferPool,
}

impl<'a> Buffers<'a> {
    /// A `rows x cols` matrix of `ty`: its contents are whatever it last held.
    pub fn matrix(&self, rows: usize, cols: usize, ty: ActType, label: &str) -> Result<GpuMatrix> {
        Ok(GpuMatrix {
            buffer: self.storage(
                label,
                matrix_bytes(rows, cols, ty),
                wgpu::BufferUsages::empty(),
            )?,
            rows,
            cols,
            ty,
        })
    }

    /// A `rows x cols` matrix of `ty` from f32 host values (rounded to f16 for `F16`).
    pub fn matrix_from_host(
        &self,
        rows: usize,
        cols: usize,
        ty: ActType,
        data: &[f32],
    ) -> Result<GpuMatrix> {
        if data.len() != rows * cols {
            return Err(WgpuError::Shape {
                op: "matrix upload".into(),
                detail: format!("{} values for {rows} x {cols}", data.len()),
            });
        }
        Ok(GpuMatrix {
            buffer: self.storage_init("matrix", &encode(ty, data))?,
            rows,
            cols,
            ty,
        })
    }

    /// A `rows x cols` matrix of `ty` with every element `value` (tests poison outputs with
    /// NaN), written through the queue (see [`WgpuContext::fill`]).
    pub fn matrix_filled(
        &self,
        rows: usize,
        cols: usize,
        ty: ActType,
        value: f32,
    ) -> Result<GpuMatrix> {
        let m = self.matrix(rows, cols, ty, "matrix")?;
        self.ctx.fill(&m, value);
        Ok(m)
    }

    /// A storage buffer of at least `bytes` bytes, with `extra` usages.
    pub(crate) fn storage(
        &self,
        label: &str,
        bytes: u64,
        extra: wgpu::BufferUsages,
    ) -> Result<PooledBuffer> {
        self.ctx.check_size(label, bytes)?;
        let usage = storage_usage() | extra;
        Ok(self.pool.take(bytes, usage, |size| {
            self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        }))
    }

    /// A new storage buffer holding `data` (it joins the pool when dropped). Host data always
    /// goes to a fresh buffer: a queue write into a pooled one could land before commands an
    /// open encoder recorded on it earlier.
    pub(crate) fn storage_init(&self, label: &str, data: &[u8]) -> Result<PooledBuffer> {
        let data = padded(data.to_vec());
        self.ctx.check_size(label, data.len() as u64)?;
        let buffer = self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bucket(data.len() as u64),
            usage: storage_usage(),
            mapped_at_creation: true,
        });
        buffer
            .get_mapped_range_mut(..data.len() as u64)
            .map_err(|e| WgpuError::Gpu {
                op: format!("writing {label}"),
                message: e.to_string(),
            })?
            .copy_from_slice(&data);
        buffer.unmap();
        Ok(self.pool.adopt(buffer))
    }
}

impl WgpuContext {
    /// Allocation from the context's own pool, for buffers made outside encoders (and dropped
    /// by code that has submitted its work).
    pub fn buffers(&self) -> Buffers<'_> {
        Buffers {
            ctx: self,
            pool: &self.pool,
        }
    }

    /// Sets every element of `m` to `value`, through the queue (before any work submitted
    /// later; see the type's docs).
    pub fn fill(&self, m: &GpuMatrix, value: f32) {
        let bytes = encode(m.ty, &vec![value; m.rows * m.cols]);
        self.queue().write_buffer(&m.buffer, 0, &padded(bytes));
    }

    /// Refuses a buffer of `bytes` that the device cannot create or bind, naming `what`.
    pub fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let p = self.profile();
        let (limit, name) = if p.max_buffer < p.max_storage_binding {
            (p.max_buffer, "max_buffer_size")
        } else {
            (p.max_storage_binding, "max_storage_buffer_binding_size")
        };
        if bucket(bytes) > limit {
            return Err(WgpuError::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
                limit_name: name,
                adapter: p.describe(),
            });
        }
        Ok(())
    }

    /// Frees the context pool's idle buffers (they are reallocated on demand) and the kernels'
    /// cached bind groups, which keep the buffers they bind alive.
    pub fn release_idle_buffers(&self) {
        self.pool.clear();
        self.kernels.forget_bind_groups();
    }

    /// Bytes held by the context pool's idle buffers.
    pub fn idle_buffer_bytes(&self) -> u64 {
        self.pool.free_bytes()
    }
}

fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

/// Bytes of a `rows x cols` matrix of `ty`, rounded up to whole words.
fn matrix_bytes(rows: usize, cols: usize, ty: ActType) -> u64 {
    ((rows * cols * ty.bytes()) as u64)
        .max(4)
        .next_multiple_of(4)
}

fn encode(ty: ActType, data: &[f32]) -> Vec<u8> {
    match ty {
        ActType::F32 => bytemuck::cast_slice(data).to_vec(),
        ActType::F16 => data
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

/// `bytes` padded with zeros to a whole, non-zero number of words (a queue write's size must be
/// a multiple of 4).
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(bytes.len().max(4).next_multiple_of(4), 0);
    bytes
}
