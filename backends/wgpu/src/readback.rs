//! Results back to the host: a copy into a mappable staging buffer, recorded with the work it
//! reads, then a map once that submission is done. Waits name their submission (not the whole
//! device, which an embedding application shares) and give up after the context's
//! `wait_timeout` with [`WgpuError::Timeout`].

use moetile_codegen::ActType;

use crate::buffers::GpuMatrix;
use crate::context::WgpuContext;
use crate::encoder::Encoder;
use crate::error::{Result, WgpuError};
use crate::pool::{BufferPool, PooledBuffer};

impl WgpuContext {
    /// Copies `m` to the host as f32, after all work queued before.
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

    /// Copies a whole buffer to the host, after all work queued before (tests read a KV
    /// cache's rows with it: [`crate::KvCache::buffers`]).
    pub fn read_buffer(&self, buffer: &wgpu::Buffer, what: &str) -> Result<Vec<u8>> {
        let mut enc = self.encoder("readback", BufferPool::default());
        let staging = self.copy_for_readback(&mut enc, buffer, buffer.size())?;
        let submission = self.submit_encoder(enc)?;
        self.read_staging(&staging, buffer.size(), what, &submission)
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

    /// Maps a staging buffer filled by `submission` and copies its first `bytes` out, waiting
    /// for that submission.
    pub(crate) fn read_staging(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
        what: &str,
        submission: &wgpu::SubmissionIndex,
    ) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.wait(submission, what)?;
        let fail = |message: String| self.readback_error(what, message);
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

    /// Blocks until `submission` (and the callbacks it completes, such as buffer maps) is done,
    /// for at most the context's [`crate::ContextOptions::wait_timeout`]; `what` names what waits.
    pub(crate) fn wait(&self, submission: &wgpu::SubmissionIndex, what: &str) -> Result<()> {
        let timeout = self.options().wait_timeout;
        let poll = self.device().poll(wgpu::PollType::Wait {
            submission_index: Some(submission.clone()),
            timeout: Some(timeout),
        });
        match poll {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(match self.lost_reason() {
                Some(reason) => WgpuError::DeviceLost { reason },
                None => WgpuError::Timeout {
                    what: what.to_string(),
                    after: timeout,
                },
            }),
            Err(e) => Err(self.readback_error(what, e.to_string())),
        }
    }

    /// The error of a failed readback of `what`: the device's loss when it was lost.
    fn readback_error(&self, what: &str, message: String) -> WgpuError {
        match self.lost_reason() {
            Some(reason) => WgpuError::DeviceLost { reason },
            None => WgpuError::Readback {
                what: what.to_string(),
                message,
            },
        }
    }
}
