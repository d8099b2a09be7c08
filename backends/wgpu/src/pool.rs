//! Buffers reused by size, so a forward pass does not allocate hundreds of fresh buffers.
//!
//! A [`PooledBuffer`] goes back to its pool when dropped; the next request of the same usage
//! and size bucket takes it. Sizes are rounded up to buckets (powers of two up to 64 KiB, then
//! steps of 1/8 of the power of two below), so batches of different lengths share buffers with
//! at most 12.5 % slack. Kernels bound-check with their params and never read past the sizes
//! they were given, so the slack is harmless.
//!
//! Reuse is safe within one stream of work, encoders recorded one at a time and submitted in
//! order: a buffer dropped after its last use was recorded and taken again later is written by
//! commands recorded later, which run later. Two streams must not share a pool: a buffer one
//! stream drops while its encoder is still open could be taken, written and submitted by the
//! other before the first stream's earlier commands on it run. So each [`crate::WgpuBackend`]
//! has its own pool, an encoder from [`crate::WgpuContext::encoder`] a fresh one, and the
//! context's own pool only serves buffers made outside encoders (which are dropped by code
//! that has submitted its work).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Free buffers by `(size, usage)`, ordered (by handle) so that which buffer a request gets
/// depends only on which are free, not on the order they were dropped in: every decode step
/// then binds the same buffers as the one before, and finds its bind groups cached
/// (`crate::kernels::Kernel::bind`).
type FreeLists = HashMap<(u64, wgpu::BufferUsages), BTreeSet<wgpu::Buffer>>;

/// A pool of free buffers, shared by handle.
#[derive(Debug, Clone, Default)]
pub(crate) struct BufferPool {
    free: Arc<Mutex<FreeLists>>,
}

/// The bucket a request of `bytes` (at least 4) is served from.
pub(crate) fn bucket(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    if bytes <= 64 * 1024 {
        return bytes.next_power_of_two();
    }
    let step = (1u64 << (63 - bytes.leading_zeros())) / 8;
    bytes.next_multiple_of(step)
}

impl BufferPool {
    /// A free buffer of `usage` holding at least `bytes`, or a new one made by `create` with
    /// the bucket size.
    pub(crate) fn take(
        &self,
        bytes: u64,
        usage: wgpu::BufferUsages,
        create: impl FnOnce(u64) -> wgpu::Buffer,
    ) -> PooledBuffer {
        let size = bucket(bytes);
        let found = self
            .lock()
            .get_mut(&(size, usage))
            .and_then(|list| list.pop_first());
        PooledBuffer {
            buffer: found.unwrap_or_else(|| create(size)),
            pool: self.clone(),
        }
    }

    /// Wraps a buffer created elsewhere (with a bucket size) so it joins the pool when dropped.
    pub(crate) fn adopt(&self, buffer: wgpu::Buffer) -> PooledBuffer {
        PooledBuffer {
            buffer,
            pool: self.clone(),
        }
    }

    /// Drops every free buffer.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Bytes held by free buffers.
    pub(crate) fn free_bytes(&self) -> u64 {
        self.lock()
            .iter()
            .map(|((size, _), list)| size * list.len() as u64)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FreeLists> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A buffer that returns to its pool when dropped.
#[derive(Debug)]
pub struct PooledBuffer {
    buffer: wgpu::Buffer,
    pool: BufferPool,
}

impl std::ops::Deref for PooledBuffer {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let key = (self.buffer.size(), self.buffer.usage());
        self.pool
            .lock()
            .entry(key)
            .or_default()
            .insert(self.buffer.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_round_up_with_bounded_slack() {
        assert_eq!(bucket(1), 256);
        assert_eq!(bucket(257), 512);
        assert_eq!(bucket(64 * 1024), 64 * 1024);
        assert_eq!(bucket(64 * 1024 + 1), 72 * 1024);
        for bytes in [70_000u64, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let b = bucket(bytes);
            assert!(
                b >= bytes && (b - bytes) as f64 <= bytes as f64 / 8.0,
                "{bytes}: {b}"
            );
            assert_eq!(bucket(b), b, "a bucket is its own bucket");
        }
    }
}
