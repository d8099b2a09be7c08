//! Results back to the host: a copy into a mappable staging buffer, recorded with the work it
//! reads, then a map once the submission is done.

use moetile_codegen::ActType;

use crate::buffers::GpuMatrix;
use crate::context::WgpuContext;
use crate::encoder::Encoder;
use crate::error::{Result, WgpuError};
use crate::pool::{BufferPool, PooledBuffer};

impl WgpuContext {
    /// Copies `m` to the host as f32, waiting for all queued work.
    pub fn read_matrix(&self, m: &GpuMatrix) -> Result<Vec<f32>> {
        let bytes = self.read_buffer(&m.buffer, "matrix")?;
        let n = m.rows * m.cols;
        Ok(match m.ty {
            ActType::F32 => bytemuck::cast_slice::<u8, f32>(&bytes)[..n].to_vec(),
            ActType::F16 => bytemuck::cast_slice::<u8, u16>(&bytes)[..n]
                .iter()
                .map(|&h| half::f16::from_bits(h).to_f32())
                .collect(),
        })
    }

    /// Copies a whole buffer to the host, waiting for all queued work.
    pub(crate) fn read_buffer(&self, buffer: &wgpu::Buffer, what: &str) -> Result<Vec<u8>> {
        let mut enc = self.encoder("readback", BufferPool::default());
        let staging = self.copy_for_readback(&mut enc, buffer, buffer.size())?;
        self.submit_encoder(enc)?;
        self.read_staging(&staging, buffer.size(), what)
    }

    /// Records a copy of the first `bytes` of `buffer` into a mappable staging buffer.
    pub(crate) fn copy_for_readback(
        &self,
        enc: &mut Encoder,
        buffer: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<PooledBuffer> {
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        self.check_size("readback staging", bytes)?;
        let staging = enc.pool.take(bytes, usage, |size| {
            self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size,
                usage,
                mapped_at_creation: false,
            })
        });
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        Ok(staging)
    }

    /// Maps a staging buffer filled by submitted work and copies its first `bytes` out,
    /// waiting for the device.
    pub(crate) fn read_staging(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        let fail = |message: String| match self.lost_reason() {
            Some(reason) => WgpuError::DeviceLost { reason },
            None => WgpuError::Readback {
                what: what.to_string(),
                message,
            },
        };
        self.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| fail(e.to_string()))?;
        rx.recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let bytes = staging
            .get_mapped_range(..bytes)
            .map_err(|e| fail(e.to_string()))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }
}
