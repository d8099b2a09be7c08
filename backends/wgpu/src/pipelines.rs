//! Pipelines at load: a model's kernels are created before its first forward pass
//! ([`WgpuContext::prepare_kernels`]) instead of in the middle of it, through a
//! `wgpu::PipelineCache` kept on disk where the device has `PIPELINE_CACHE` (Vulkan), so a
//! second run starts from the driver's compiled pipelines.
//!
//! The cache file lives in the folder [`crate::ContextOptions::pipeline_cache_dir`] names, one
//! per adapter and driver (`wgpu::util::pipeline_cache_key`). wgpu hands the driver whatever
//! bytes it is given, so the file carries its own length and checksum: a truncated or corrupt
//! file is ignored with a warning and rewritten, never an error. Writes go to a temporary file
//! renamed over the old one, so a crash leaves the previous file or the new one.

use std::path::{Path, PathBuf};

use moetile_codegen::KernelKey;

use crate::context::WgpuContext;
use crate::error::Result;

/// The file header: magic, then payload length and FNV-1a checksum (little-endian u64s).
const MAGIC: &[u8; 8] = b"moetpc01";
const HEADER: usize = 24;

/// A pipeline cache and the file it is saved to.
#[derive(Debug)]
pub(crate) struct PipelineCacheFile {
    pub(crate) cache: wgpu::PipelineCache,
    path: PathBuf,
}

impl PipelineCacheFile {
    /// The cache of `device` in `dir` under `key` (from `wgpu::util::pipeline_cache_key`),
    /// seeded from its file when that is intact.
    pub(crate) fn open(device: &wgpu::Device, dir: &Path, key: &str) -> PipelineCacheFile {
        let path = dir.join(format!("{key}.bin"));
        let data = match std::fs::read(&path) {
            Ok(bytes) => unwrap_payload(&bytes).or_else(|| {
                eprintln!(
                    "warning: ignoring the corrupt pipeline cache {} (it will be rewritten)",
                    path.display()
                );
                None
            }),
            Err(_) => None,
        };
        // SAFETY: `data` is what `PipelineCache::get_data` returned for an adapter with the
        // same `pipeline_cache_key` (the file name), checked intact against its checksum;
        // `fallback` makes wgpu start empty when the driver rejects it (e.g. after an update).
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("moetile pipelines"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        PipelineCacheFile { cache, path }
    }

    /// Writes the cache's data through a temporary file renamed over the old one; a failure is
    /// a warning (the next run compiles again).
    pub(crate) fn save(&self) {
        let Some(data) = self.cache.get_data() else {
            return;
        };
        let tmp = self.path.with_extension("bin.tmp");
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, wrap_payload(&data)))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            eprintln!(
                "warning: could not save the pipeline cache {}: {e}",
                self.path.display()
            );
        }
    }
}

impl WgpuContext {
    /// Creates the kernels of `keys` now (those not created yet), reporting `(done, total)`
    /// after each, then saves the pipeline cache when there is one. A key used later without
    /// being prepared is still created on first use.
    pub fn prepare_kernels(
        &self,
        keys: &[KernelKey],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        for (i, key) in keys.iter().enumerate() {
            self.kernels.get(self.device(), key)?;
            progress(i + 1, keys.len());
        }
        if let Some(file) = self.kernels.pipeline_cache() {
            file.save();
        }
        Ok(())
    }
}

impl WgpuContext {
    /// How many kernels this context has created (prepared or on first use).
    pub fn created_kernels(&self) -> usize {
        self.kernels.len()
    }

    /// How many bind groups the kernels keep for reuse (see `crate::kernels::Kernel::bind`).
    pub fn cached_bind_groups(&self) -> usize {
        self.kernels.cached_bind_groups()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn wrap_payload(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(data).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The payload of a file [`wrap_payload`] wrote, if it is intact.
fn unwrap_payload(file: &[u8]) -> Option<Vec<u8>> {
    let word = |i: usize| u64::from_le_bytes(file[i..i + 8].try_into().expect("8 bytes"));
    if file.len() < HEADER || &file[..8] != MAGIC {
        return None;
    }
    let payload = &file[HEADER..];
    (word(8) == payload.len() as u64 && word(16) == fnv1a(payload)).then(|| payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_cache_files_are_refused() {
        let file = wrap_payload(b"driver data");
        assert_eq!(unwrap_payload(&file).as_deref(), Some(&b"driver data"[..]));
        assert_eq!(unwrap_payload(&file[..file.len() - 1]), None);
        let mut flipped = file.clone();
        flipped[HEADER + 3] ^= 1;
        assert_eq!(unwrap_payload(&flipped), None);
        assert_eq!(unwrap_payload(b"short"), None);
        assert_eq!(unwrap_payload(&[0u8; 64]), None);
    }
}
