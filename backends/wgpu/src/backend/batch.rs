//! What the ops of one batch share: the one-expert routings and maps of dense projections, and
//! the rope angle table, kept across calls while the batch length and positions repeat.

use std::collections::HashMap;
use std::sync::Arc;

use moetile::model::gptoss::Yarn;
use moetile::model::{Backend, RopeParams};
use moetile::tile::TileWidth;
use moetile_codegen::{ActType, MatmulKey, Path, WeightType};

use super::{WgpuBackend, shape};
use crate::buffers::GpuMatrix;
use crate::layout::ExpertTensor;
use crate::moe::{self, ExpertMap, Matmul, MvExtras, Routing};
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

/// The rotary angles of positions `0..n_positions` under one rotation. q and k of every layer
/// rotated alike and every step read this one buffer, grown by doubling, so decode steps bind
/// the same buffer as the step before (and find their bind groups cached). gpt-oss's sliding
/// and full layers may rotate with different bases: a table each.
#[derive(Debug)]
pub(super) struct RopeTable {
    n_positions: usize,
    params: RopeParams,
    yarn: Yarn,
    angles: PooledBuffer,
}

/// The fewest positions a rope table is made for.
const MIN_ROPE_POSITIONS: usize = 1024;

/// The tile width of dense matmuls over `n_tokens`: the widest not above the batch.
pub(super) fn dense_tile(n_tokens: usize) -> TileWidth {
    TileWidth::ALL
        .into_iter()
        .rev()
        .find(|w| w.tokens() <= n_tokens)
        .unwrap_or(TileWidth::T32)
}

impl WgpuBackend {
    /// Records `x (T, cols) @ w^T` into columns `out_col..out_col + w.dense_rows()` of `out
    /// (T, _)`: mat-vec for small batches (with `extras`), else the tiled matmul (which takes
    /// none). A weight in slices (see [`ExpertTensor::slices`]) multiplies every token by every
    /// slice: pair `t * slices + s` fills slice s's columns of row t.
    pub(super) fn matmul_into(
        &mut self,
        x: &GpuMatrix,
        w: &ExpertTensor,
        out: &GpuMatrix,
        out_col: usize,
        extras: MvExtras<'_>,
    ) -> moetile::Result<()> {
        if x.cols != w.cols || w.experts != w.slices || x.rows == 0 || out.rows != x.rows {
            return Err(shape(
                "matmul",
                format!(
                    "x is ({}, {}), {} is {} x {} x {}, the output has {} rows",
                    x.rows, x.cols, w.name, w.experts, w.rows, w.cols, out.rows
                ),
            ));
        }
        let mm = Matmul {
            w,
            act: x,
            act_row_div: w.slices,
            out,
            out_col,
        };
        self.dense_pairs(x.rows, mm, extras)
    }

    /// Records `x (T, G * cols)` times the block-diagonal weight of `w`'s G slices
    /// (`Backend::grouped_matmul`) into `out (T * G, w.rows)`: the dense routing of T tokens
    /// over G slices, whose pair `t * G + g` reads x's row t cut into rows of `cols` (row
    /// `t * G + g` of that view, `act_row_div` 1) and fills out's row `t * G + g`.
    pub(super) fn grouped_into(
        &mut self,
        x: &GpuMatrix,
        w: &ExpertTensor,
        out: &GpuMatrix,
    ) -> moetile::Result<()> {
        let mm = Matmul {
            w,
            act: x,
            act_row_div: 1,
            out,
            out_col: 0,
        };
        self.dense_pairs(x.rows, mm, MvExtras::default())
    }

    /// Records `mm` over the pairs of the dense routing of `n_tokens` to every slice of
    /// `mm.w`: mat-vec for small batches (with `extras`), else the tiled matmul (which takes
    /// none).
    fn dense_pairs(
        &mut self,
        n_tokens: usize,
        mm: Matmul<'_>,
        extras: MvExtras<'_>,
    ) -> moetile::Result<()> {
        let (w, slices) = (mm.w, mm.w.slices);
        if n_tokens <= self.mat_vec_max_tokens() {
            let routing = self.dense_routing(n_tokens, slices)?;
            self.record("matmul", |rec| moe::mv_id(rec, &routing, mm, extras))
        } else {
            if extras.norm.is_some() || extras.accumulate {
                return Err(shape(
                    "matmul",
                    format!("a folded norm or add on the tiled path ({n_tokens} tokens)"),
                ));
            }
            let tile = dense_tile(n_tokens);
            let map = self.dense_map(n_tokens, slices, tile)?;
            let path = if w.weight == WeightType::F32 {
                Path::Reg
            } else {
                self.options.path
            };
            let key = MatmulKey {
                weight: w.weight,
                act: ActType::F32,
                tile,
                path,
            };
            self.record("matmul", |rec| moe::mm_id(rec, key, &map, mm))
        }
    }

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

    /// The rope table of `p` extended by `yarn`, made to cover positions `0..end`.
    pub(super) fn rope_table(
        &mut self,
        end: usize,
        p: &RopeParams,
        yarn: &Yarn,
    ) -> moetile::Result<wgpu::Buffer> {
        let same = |r: &RopeTable| r.params == *p && r.yarn == *yarn;
        if let Some(r) = self.rope.iter().find(|r| same(r) && r.n_positions >= end) {
            return Ok((*r.angles).clone());
        }
        let n_positions = end.next_power_of_two().max(MIN_ROPE_POSITIONS);
        let angles = rope_angles(p, yarn, 0, n_positions);
        let angles = self
            .buffers()
            .storage_init("rope angles", bytemuck::cast_slice(&angles))?;
        let buffer = (*angles).clone();
        self.rope.retain(|r| !same(r));
        self.rope.push(RopeTable {
            n_positions,
            params: *p,
            yarn: *yarn,
            angles,
        });
        Ok(buffer)
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
