//! What the ops of one batch share: the one-expert routings and maps of dense projections, and
//! the rope angle table, kept across calls while the batch length and positions repeat.

use std::collections::HashMap;
use std::sync::Arc;

use moetile::model::RopeParams;
use moetile::tile::TileWidth;

use super::WgpuBackend;
use crate::moe::{ExpertMap, Routing};
use crate::ops::rope_angles;
use crate::pool::PooledBuffer;

/// Per batch length, what dense ops share: the one-expert routing and maps by tile width.
#[derive(Debug, Default)]
pub(super) struct DenseCache {
    /// By (tokens, slices).
    routings: HashMap<(usize, usize), Arc<Routing>>,
    /// By (tokens, slices, tile).
    maps: HashMap<(usize, usize, TileWidth), Arc<ExpertMap>>,
}

/// Batch lengths whose dense routing and maps are kept (prefill chunks, decode).
const DENSE_CACHE_LENGTHS: usize = 8;

/// The angle table of the last rope call (q and k of every layer share it).
#[derive(Debug)]
pub(super) struct RopeTable {
    pos0: usize,
    n_rows: usize,
    params: RopeParams,
    pub(super) angles: PooledBuffer,
}

/// The tile width of dense matmuls over `n_tokens`: the widest not above the batch.
pub(super) fn dense_tile(n_tokens: usize) -> TileWidth {
    TileWidth::ALL
        .into_iter()
        .rev()
        .find(|w| w.tokens() <= n_tokens)
        .unwrap_or(TileWidth::T32)
}

impl WgpuBackend {
    /// The routing of a dense op over `n_tokens` and a weight in `slices` slices (every
    /// token to every slice, weight 1).
    pub(super) fn dense_routing(
        &mut self,
        n_tokens: usize,
        slices: usize,
    ) -> moetile::Result<Arc<Routing>> {
        if let Some(r) = self.dense.routings.get(&(n_tokens, slices)) {
            return Ok(r.clone());
        }
        if self.dense.routings.len() >= DENSE_CACHE_LENGTHS {
            self.dense = DenseCache::default();
        }
        let r = Arc::new(Routing::dense(&self.buffers(), n_tokens, slices)?);
        self.dense.routings.insert((n_tokens, slices), r.clone());
        Ok(r)
    }

    /// The map of a dense matmul over `n_tokens` and a weight in `slices` slices, in
    /// `tile`-token work items.
    pub(super) fn dense_map(
        &mut self,
        n_tokens: usize,
        slices: usize,
        tile: TileWidth,
    ) -> moetile::Result<Arc<ExpertMap>> {
        let key = (n_tokens, slices, tile);
        if let Some(m) = self.dense.maps.get(&key) {
            return Ok(m.clone());
        }
        if self.dense.maps.len() >= DENSE_CACHE_LENGTHS {
            self.dense = DenseCache::default();
        }
        let map = Arc::new(ExpertMap::dense(&self.buffers(), n_tokens, slices, tile)?);
        self.dense.maps.insert(key, map.clone());
        Ok(map)
    }

    pub(super) fn rope_table(
        &mut self,
        pos0: usize,
        n_rows: usize,
        p: &RopeParams,
    ) -> moetile::Result<()> {
        let fresh = self
            .rope
            .as_ref()
            .is_some_and(|r| r.pos0 == pos0 && r.n_rows == n_rows && r.params == *p);
        if !fresh {
            let angles = rope_angles(p, pos0, n_rows);
            self.rope = Some(RopeTable {
                pos0,
                n_rows,
                params: *p,
                angles: self
                    .buffers()
                    .storage_init("rope angles", bytemuck::cast_slice(&angles))?,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_tiles_are_the_widest_not_above_the_batch() {
        assert_eq!(dense_tile(5), TileWidth::T32);
        assert_eq!(dense_tile(63), TileWidth::T32);
        assert_eq!(dense_tile(64), TileWidth::T64);
        assert_eq!(dense_tile(127), TileWidth::T64);
        assert_eq!(dense_tile(128), TileWidth::T128);
        assert_eq!(dense_tile(4096), TileWidth::T128);
    }
}
