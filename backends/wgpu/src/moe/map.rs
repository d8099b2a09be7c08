//! [`ExpertMap`]: the expert-major view of a [`Routing`] for one tile width, built on the
//! device by the `map` kernel (or on the host for dense projections), and the grid its
//! matmuls take from it.

use moetile::tile::TileWidth;
use moetile_codegen::params::MapParams;
use moetile_codegen::{KernelKey, MAP_DISPATCH_SLOTS};

use crate::buffers::Buffers;
use crate::context::WgpuContext;
use crate::dispatch::Grid;
use crate::error::{Result, WgpuError, shape};
use crate::moe::Routing;
use crate::pool::PooledBuffer;
use crate::recorder::Recorder;

/// The expert-major view of a [`Routing`] for one tile width: per-expert spans, the pair list,
/// the work list of token tiles and the indirect dispatch arguments of its matmuls.
#[derive(Debug)]
pub struct ExpertMap {
    tile: TileWidth,
    pub(crate) n_pairs: usize,
    pub(crate) n_experts: usize,
    pub(crate) experts: PooledBuffer,
    pub(crate) list: PooledBuffer,
    pub(crate) items: PooledBuffer,
    grid: MapGrid,
}

/// Where a map's matmuls take the x extent of their grid from.
#[derive(Debug)]
enum MapGrid {
    /// Indirect arguments the map kernel wrote, one slot per row-tile count.
    Indirect {
        dispatch: PooledBuffer,
        row_groups: Vec<u32>,
    },
    /// A map built on the host: its work-item count.
    Direct { items: u32 },
}

/// An [`ExpertMap`] read back to the host (tests, debugging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapContents {
    /// Per expert: (offset into `list`, pair count).
    pub experts: Vec<(u32, u32)>,
    /// Pair ids, expert-major.
    pub list: Vec<u32>,
    /// Work items (expert, first token within the expert's list).
    pub items: Vec<(u32, u32)>,
    /// Indirect arguments: (work items, row groups, 1) per slot.
    pub dispatch: Vec<[u32; 3]>,
}

/// Records the expert map of `routing` for `tile`-token tiles, with dispatch arguments for
/// matmuls of each row-tile count in `row_groups` (at most [`MAP_DISPATCH_SLOTS`]).
pub fn map(
    rec: &mut Recorder<'_>,
    routing: &Routing,
    tile: TileWidth,
    row_groups: &[u32],
) -> Result<ExpertMap> {
    let mut row_groups = row_groups.to_vec();
    row_groups.sort_unstable();
    row_groups.dedup();
    if row_groups.len() > MAP_DISPATCH_SLOTS {
        return Err(shape(
            "expert map",
            format!(
                "{} distinct row-tile counts, at most {MAP_DISPATCH_SLOTS}",
                row_groups.len()
            ),
        ));
    }
    let key = KernelKey::Map { tile };
    let wg = key.workgroup_size() as usize;
    let (n_pairs, n_experts) = (routing.n_pairs(), routing.n_experts);
    let n_chunks = n_pairs.div_ceil(wg);
    let max_items = n_pairs.div_ceil(tile.tokens()) + n_experts.min(n_pairs);
    let limit = rec.profile().max_workgroups_per_dim;
    for (what, groups) in [("work items", max_items), ("pair chunks", n_chunks)] {
        if groups > limit as usize {
            return Err(WgpuError::GridTooLarge {
                op: format!("{key} ({what})"),
                groups: groups as u64,
                limit,
            });
        }
    }
    let mut slots = [0u32; MAP_DISPATCH_SLOTS];
    slots[..row_groups.len()].copy_from_slice(&row_groups);
    let params = rec.params(&MapParams {
        n_pairs: n_pairs as u32,
        n_experts: n_experts as u32,
        n_chunks: n_chunks as u32,
        _pad0: 0,
        row_groups: slots,
    });
    let none = wgpu::BufferUsages::empty();
    let buffers = rec.buffers();
    let chunk_counts =
        buffers.storage("map chunk counts", (n_chunks * n_experts * 4) as u64, none)?;
    let ranks = buffers.storage("map ranks", (n_pairs * 4) as u64, none)?;
    let dispatch = buffers.storage(
        "map dispatch",
        (12 * MAP_DISPATCH_SLOTS) as u64,
        wgpu::BufferUsages::INDIRECT,
    )?;
    let experts = buffers.storage("map experts", (n_experts * 8) as u64, none)?;
    let list = buffers.storage("map list", (n_pairs * 4) as u64, none)?;
    let items = buffers.storage("map items", (max_items * 8) as u64, none)?;
    let kernel = rec.kernel(&key)?;
    let bind = kernel.bind(
        rec.context().device(),
        &[
            ("params", params.binding()),
            ("ids", routing.ids.as_entire_binding()),
            ("chunk_counts", chunk_counts.as_entire_binding()),
            ("ranks", ranks.as_entire_binding()),
            ("experts", experts.as_entire_binding()),
            ("list", list.as_entire_binding()),
            ("items", items.as_entire_binding()),
            ("dispatch", dispatch.as_entire_binding()),
        ],
    )?;
    rec.encoder().clear_buffer(&chunk_counts, 0, None);
    let pass = rec.pass(kernel.name());
    pass.set_bind_group(0, &bind.group, &bind.offsets);
    pass.set_pipeline(kernel.pipeline("count"));
    pass.dispatch_workgroups(n_chunks as u32, 1, 1);
    pass.set_pipeline(kernel.pipeline("scan"));
    pass.dispatch_workgroups(1, 1, 1);
    pass.set_pipeline(kernel.pipeline("fill"));
    pass.dispatch_workgroups(n_chunks as u32, 1, 1);
    Ok(ExpertMap {
        tile,
        n_pairs,
        n_experts,
        experts,
        list,
        items,
        grid: MapGrid::Indirect {
            dispatch,
            row_groups,
        },
    })
}

impl ExpertMap {
    /// The tile width whose work list this map holds.
    pub fn tile(&self) -> TileWidth {
        self.tile
    }

    /// The row-tile counts this map prepared indirect dispatch arguments for (none for a
    /// dense map, whose matmuls dispatch directly).
    pub fn row_groups(&self) -> &[u32] {
        match &self.grid {
            MapGrid::Indirect { row_groups, .. } => row_groups,
            MapGrid::Direct { .. } => &[],
        }
    }

    /// The map of a dense projection over `n_tokens` tokens and a weight in `slices` slices
    /// of rows (see [`Routing::dense`]): every token on every slice, in token order, in work
    /// items of `tile` tokens. Built on the host; reusable for every dense matmul of a batch.
    pub(crate) fn dense(
        buffers: &Buffers<'_>,
        n_tokens: usize,
        slices: usize,
        tile: TileWidth,
    ) -> Result<ExpertMap> {
        let tiles = n_tokens.div_ceil(tile.tokens());
        let items: Vec<u32> = (0..slices)
            .flat_map(|k| (0..tiles).flat_map(move |i| [k as u32, (i * tile.tokens()) as u32]))
            .collect();
        let list: Vec<u32> = (0..slices)
            .flat_map(|k| (0..n_tokens).map(move |t| (t * slices + k) as u32))
            .collect();
        let spans: Vec<u32> = (0..slices)
            .flat_map(|k| [(k * n_tokens) as u32, n_tokens as u32])
            .collect();
        Ok(ExpertMap {
            tile,
            n_pairs: n_tokens * slices,
            n_experts: slices,
            experts: buffers.storage_init("dense map experts", bytemuck::cast_slice(&spans))?,
            list: buffers.storage_init("dense map list", bytemuck::cast_slice(&list))?,
            items: buffers.storage_init("dense map items", bytemuck::cast_slice(&items))?,
            grid: MapGrid::Direct {
                items: (items.len() / 2) as u32,
            },
        })
    }

    /// The grid of `key` over `rows` output rows: y from the key, x from the map.
    pub(crate) fn grid(&self, key: &KernelKey, rows: usize) -> Result<Grid<'_>> {
        if key.tile() != Some(self.tile) {
            return Err(WgpuError::TileMismatch {
                kernel: key.to_string(),
                kernel_tile: key.tokens_per_workgroup().unwrap_or(0) as usize,
                map_tile: self.tile.tokens(),
            });
        }
        let groups = key
            .row_groups(rows as u32)
            .expect("grouped matmuls have a row tile");
        match &self.grid {
            MapGrid::Indirect {
                dispatch,
                row_groups,
            } => {
                let slot = row_groups
                    .iter()
                    .position(|&g| g == groups)
                    .ok_or_else(|| WgpuError::MissingDispatchSlot {
                        kernel: key.to_string(),
                        row_groups: groups,
                        prepared: row_groups.clone(),
                    })?;
                Ok(Grid::Indirect(dispatch, 12 * slot as u64))
            }
            MapGrid::Direct { items } => Ok(Grid::Groups(*items, groups)),
        }
    }

    /// Reads the map back (waits for queued work).
    pub fn contents(&self, ctx: &WgpuContext) -> Result<MapContents> {
        let words = |b: &wgpu::Buffer, what: &str| -> Result<Vec<u32>> {
            Ok(bytemuck::cast_slice(&ctx.read_buffer(b, what)?).to_vec())
        };
        let pairs =
            |w: Vec<u32>| -> Vec<(u32, u32)> { w.chunks_exact(2).map(|c| (c[0], c[1])).collect() };
        let (dispatch, n_items): (Vec<[u32; 3]>, usize) = match &self.grid {
            MapGrid::Indirect { dispatch, .. } => {
                let args: Vec<[u32; 3]> = words(dispatch, "map dispatch")?
                    .chunks_exact(3)
                    .take(MAP_DISPATCH_SLOTS)
                    .map(|c| [c[0], c[1], c[2]])
                    .collect();
                let n = args[0][0] as usize;
                (args, n)
            }
            MapGrid::Direct { items } => (Vec::new(), *items as usize),
        };
        let mut items = pairs(words(&self.items, "map items")?);
        items.truncate(n_items);
        let mut experts = pairs(words(&self.experts, "map experts")?);
        experts.truncate(self.n_experts);
        let mut list = words(&self.list, "map list")?;
        list.truncate(self.n_pairs);
        Ok(MapContents {
            experts,
            list,
            items,
            dispatch,
        })
    }
}
