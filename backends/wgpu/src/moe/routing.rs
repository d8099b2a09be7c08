//! [`Routing`]: T tokens routed to K of E experts each, on the device.

use crate::buffers::Buffers;
use crate::error::{Result, shape};
use crate::pool::PooledBuffer;

/// T tokens routed to K of E experts each, on the device.
#[derive(Debug)]
pub struct Routing {
    pub(crate) ids: PooledBuffer,
    pub(crate) weights: PooledBuffer,
    /// T.
    pub n_tokens: usize,
    /// K.
    pub n_used: usize,
    /// E.
    pub n_experts: usize,
}

impl Routing {
    /// A routing from host `ids` and `weights`, both (T, K = `n_used`) row-major; every id
    /// must be < E = `n_experts`.
    pub fn from_host(
        buffers: &Buffers<'_>,
        n_experts: usize,
        n_used: usize,
        ids: &[u32],
        weights: &[f32],
    ) -> Result<Routing> {
        if n_used == 0
            || ids.is_empty()
            || !ids.len().is_multiple_of(n_used)
            || weights.len() != ids.len()
        {
            return Err(shape(
                "routing",
                format!(
                    "{} ids and {} weights are not a non-empty (T, K = {n_used}) matrix",
                    ids.len(),
                    weights.len()
                ),
            ));
        }
        if let Some(i) = ids.iter().position(|&e| e as usize >= n_experts) {
            return Err(shape(
                "routing",
                format!("id #{i} is expert {} of {n_experts}", ids[i]),
            ));
        }
        Ok(Routing {
            ids: buffers.storage_init("routing ids", bytemuck::cast_slice(ids))?,
            weights: buffers.storage_init("routing weights", bytemuck::cast_slice(weights))?,
            n_tokens: ids.len() / n_used,
            n_used,
            n_experts,
        })
    }

    /// Every one of `n_tokens` tokens routed to each of `slices` experts with weight 1: the
    /// routing of a dense projection (mat-vec) over a weight in `slices` slices of rows, or of
    /// a dense SwiGLU (`act`, one slice).
    pub(crate) fn dense(buffers: &Buffers<'_>, n_tokens: usize, slices: usize) -> Result<Routing> {
        let ids: Vec<u32> = (0..n_tokens).flat_map(|_| 0..slices as u32).collect();
        let weights = vec![1.0; ids.len()];
        Routing::from_host(buffers, slices, slices, &ids, &weights)
    }

    /// T * K.
    pub fn n_pairs(&self) -> usize {
        self.n_tokens * self.n_used
    }
}
