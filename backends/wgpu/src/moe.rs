//! The routed-MoE layer on the GPU: routing, the expert map, the grouped matmul (`mm_id`) and
//! mat-vec (`mv_id`), the activation and the sum over K.
//!
//! ```text
//! map:  ids (T, K) -> spans, expert-major pair list, work list of token tiles, dispatch args
//! gate: g (T*K, F) = mm_id(W_gate, x (T, D), row of pair p = p / K)
//! up:   u (T*K, F) = mm_id(W_up, x)
//! act:  mid (T*K, F) = act(g, u) * route_weight   (f16 when the device has SHADER_F16)
//! down: y (T*K, D) = mm_id(W_down, mid, row of pair p = p)
//! sum:  out (T, D) = sum_k y[t*K + k]
//! ```
//! The map is built once per layer for one tile width and reused by the three matmuls. A
//! matmul's grid comes only from its key and the map: x = the map's work items (indirect),
//! y = `key.row_groups(rows)`; a map of another width is refused ([`WgpuError::TileMismatch`]).
//! Small batches skip the map and run `mv_id`, one workgroup row per pair.
//!
//! Dense projections are the one-expert case: [`ExpertMap::dense`] lists the batch's tokens for
//! expert 0 on the host (its work-item count is known, so its matmuls dispatch directly), and
//! [`Routing::dense`] routes every token to expert 0 with weight 1 for `mv_id` and `act`. A
//! dense weight too large for one binding is several experts of whole rows
//! ([`ExpertTensor::slices`]); its maps and routings send every token to each of them.

use moetile::model::{ExpertActivation, ExpertWeights, MoeParams};
use moetile::tile::TileWidth;
use moetile_codegen::params::{ActParams, MapParams, MatmulParams, SumParams};
use moetile_codegen::{ActType, KernelKey, MAP_DISPATCH_SLOTS, MatmulKey, Path, WeightType};

use crate::adapter::Profile;
use crate::context::{GpuMatrix, WgpuContext};
use crate::dispatch::Grid;
use crate::encoder::{Encoder, ParamSlot};
use crate::error::{Result, WgpuError, shape};
use crate::layout::ExpertTensor;
use crate::pool::{BufferPool, PooledBuffer};
use crate::timer::{Timer, begin_pass};

/// The largest batch that runs the mat-vec kernels by default on a device of `profile` whose
/// grouped matmuls use `path`.
///
/// GPUs, measured on the H100 (Qwen3-30B-A3B expert shape, `bench/crossover-h100.csv`): the
/// mat-vec costs ~9 us per token; map + cooperative mm_id ~55 us at T = 1, ~0.25 ms at T = 24
/// and ~0.28 ms at T = 32, so they meet at T = 24 (q4_K: mat-vec 15% faster there, iq2_xxs: 4%
/// slower) to 32. The register-tile mm_id is 2-4x slower at small T, so the mat-vec wins up to
/// T = 32 (iq2_xxs) to beyond 64 (q4_K).
///
/// CPU adapters (`bench/crossover-lavapipe.csv`): one mat-vec workgroup row per (pair, row
/// group) is pure overhead on lavapipe's threads, so the tiled matmul wins from T = 1 (map +
/// mm_id 1.2 ms against 2.0 ms) and the mat-vec is never the default.
pub fn mat_vec_max_tokens(profile: &Profile, path: Path) -> usize {
    if profile.is_cpu() {
        return 0;
    }
    match path {
        Path::Reg => 32,
        Path::Coop16 | Path::Coop8 => 24,
    }
}

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
    /// T * K.
    pub fn n_pairs(&self) -> usize {
        self.n_tokens * self.n_used
    }

    /// Every one of `n_tokens` tokens routed to each of `slices` experts with weight 1: the
    /// routing of a dense projection (mat-vec) over a weight in `slices` slices of rows, or of
    /// a dense SwiGLU (`act`, one slice).
    pub(crate) fn dense(
        ctx: &WgpuContext,
        pool: &BufferPool,
        n_tokens: usize,
        slices: usize,
    ) -> Result<Routing> {
        let ids: Vec<u32> = (0..n_tokens).flat_map(|_| 0..slices as u32).collect();
        let weights = vec![1.0; ids.len()];
        ctx.routing_from_host_in(pool, slices, slices, &ids, &weights)
    }
}

/// The expert-major view of a [`Routing`] for one tile width: per-expert spans, the pair list,
/// the work list of token tiles and the indirect dispatch arguments of its matmuls.
#[derive(Debug)]
pub struct ExpertMap {
    tile: TileWidth,
    n_pairs: usize,
    n_experts: usize,
    experts: PooledBuffer,
    list: PooledBuffer,
    items: PooledBuffer,
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
        ctx: &WgpuContext,
        pool: &BufferPool,
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
            experts: ctx.storage_init(pool, "dense map experts", bytemuck::cast_slice(&spans))?,
            list: ctx.storage_init(pool, "dense map list", bytemuck::cast_slice(&list))?,
            items: ctx.storage_init(pool, "dense map items", bytemuck::cast_slice(&items))?,
            grid: MapGrid::Direct {
                items: (items.len() / 2) as u32,
            },
        })
    }

    /// The grid of `key` over `rows` output rows: y from the key, x from the map.
    fn grid(&self, key: &KernelKey, rows: usize) -> Result<Grid<'_>> {
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
}

/// How [`WgpuContext::moe`] runs a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeOptions {
    /// The activation between up/gate and down.
    pub activation: ExpertActivation,
    /// Token-tile width of the grouped matmuls.
    pub tile: TileWidth,
    /// Matmul path.
    pub path: Path,
    /// Storage type of `mid`, the input of `down`.
    pub mid: ActType,
    /// Run the mat-vec kernels (no map, no tiles) instead of the grouped matmuls.
    pub mat_vec: bool,
}

impl MoeOptions {
    /// The defaults for a batch of `n_tokens` on `ctx`: the tile `p` asks for, the fastest path
    /// the device runs, f16 `mid` with `SHADER_F16`, mat-vec for at most
    /// [`mat_vec_max_tokens`] tokens.
    pub fn new(ctx: &WgpuContext, p: &MoeParams, n_tokens: usize) -> MoeOptions {
        let path = ctx.profile().best_path();
        MoeOptions {
            activation: p.activation,
            tile: p.tile,
            path,
            mid: if ctx.profile().shader_f16 {
                ActType::F16
            } else {
                ActType::F32
            },
            mat_vec: n_tokens <= mat_vec_max_tokens(ctx.profile(), path),
        }
    }
}

/// The intermediate matrices of one MoE layer evaluation.
#[derive(Debug)]
pub struct MoeBuffers {
    /// (T*K, F) f32.
    pub gate: GpuMatrix,
    /// (T*K, F) f32.
    pub up: GpuMatrix,
    /// (T*K, F), f32 or f16.
    pub mid: GpuMatrix,
    /// (T*K, D) f32.
    pub y: GpuMatrix,
}

impl WgpuContext {
    /// A routing from host `ids` and `weights`, both (T, K) row-major; every id must be < E.
    pub fn routing_from_host(
        &self,
        n_experts: usize,
        n_used: usize,
        ids: &[u32],
        weights: &[f32],
    ) -> Result<Routing> {
        self.routing_from_host_in(&self.pool, n_experts, n_used, ids, weights)
    }

    /// [`Self::routing_from_host`] joining `pool` when dropped.
    pub(crate) fn routing_from_host_in(
        &self,
        pool: &BufferPool,
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
            ids: self.storage_init(pool, "routing ids", bytemuck::cast_slice(ids))?,
            weights: self.storage_init(pool, "routing weights", bytemuck::cast_slice(weights))?,
            n_tokens: ids.len() / n_used,
            n_used,
            n_experts,
        })
    }

    /// Encodes the expert map of `routing` for `tile`-token tiles, with dispatch arguments for
    /// matmuls of each row-tile count in `row_groups` (at most [`MAP_DISPATCH_SLOTS`]).
    pub fn encode_map(
        &self,
        enc: &mut Encoder,
        routing: &Routing,
        tile: TileWidth,
        row_groups: &[u32],
        timer: Option<&mut Timer>,
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
        let limit = self.profile().max_workgroups_per_dim;
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
        let params = enc.params(&MapParams {
            n_pairs: n_pairs as u32,
            n_experts: n_experts as u32,
            n_chunks: n_chunks as u32,
            _pad0: 0,
            row_groups: slots,
        });
        let none = wgpu::BufferUsages::empty();
        let pool = enc.pool.clone();
        let chunk_counts = self.storage(
            &pool,
            "map chunk counts",
            (n_chunks * n_experts * 4) as u64,
            none,
        )?;
        let ranks = self.storage(&pool, "map ranks", (n_pairs * 4) as u64, none)?;
        let dispatch = self.storage(
            &pool,
            "map dispatch",
            (12 * MAP_DISPATCH_SLOTS) as u64,
            wgpu::BufferUsages::INDIRECT,
        )?;
        let experts = self.storage(&pool, "map experts", (n_experts * 8) as u64, none)?;
        let list = self.storage(&pool, "map list", (n_pairs * 4) as u64, none)?;
        let items = self.storage(&pool, "map items", (max_items * 8) as u64, none)?;
        let kernel = self.kernels.get(self.device(), &key)?;
        let bind = kernel.bind(
            self.device(),
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
        enc.clear_buffer(&chunk_counts, 0, None);
        let pass = begin_pass(enc, kernel.name(), timer);
        pass.set_bind_group(0, &bind, &[]);
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

    /// Builds the expert map of `routing` (see [`Self::encode_map`]) and submits it.
    pub fn build_map(
        &self,
        routing: &Routing,
        tile: TileWidth,
        row_groups: &[u32],
    ) -> Result<ExpertMap> {
        self.submit("expert map", |enc| {
            self.encode_map(enc, routing, tile, row_groups, None)
        })
    }

    /// Reads an expert map back (waits for queued work).
    pub fn read_map(&self, map: &ExpertMap) -> Result<MapContents> {
        let words = |b: &wgpu::Buffer, what: &str| -> Result<Vec<u32>> {
            Ok(bytemuck::cast_slice(&self.read_buffer(b, what)?).to_vec())
        };
        let pairs =
            |w: Vec<u32>| -> Vec<(u32, u32)> { w.chunks_exact(2).map(|c| (c[0], c[1])).collect() };
        let (dispatch, n_items): (Vec<[u32; 3]>, usize) = match &map.grid {
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
        let mut items = pairs(words(&map.items, "map items")?);
        items.truncate(n_items);
        let mut experts = pairs(words(&map.experts, "map experts")?);
        experts.truncate(map.n_experts);
        let mut list = words(&map.list, "map list")?;
        list.truncate(map.n_pairs);
        Ok(MapContents {
            experts,
            list,
            items,
            dispatch,
        })
    }

    /// Encodes `out (P, rows) = W[e(p)] @ act[p / act_row_div]` for every pair p of `map`
    /// with kernel `key`: one workgroup per (work item, row tile), once per weight chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_mm_id(
        &self,
        enc: &mut Encoder,
        key: MatmulKey,
        map: &ExpertMap,
        w: &ExpertTensor,
        act: &GpuMatrix,
        act_row_div: usize,
        out: &GpuMatrix,
        timer: Option<&mut Timer>,
    ) -> Result<()> {
        let kkey = KernelKey::MmId(key);
        if let Err(why) = self.profile().supports(key.path) {
            return Err(WgpuError::MissingFeature {
                adapter: self.profile().describe(),
                what: kkey.to_string(),
                feature: why,
                fix: "use the register-tile path (Path::Reg), which runs everywhere",
            });
        }
        let grid = map.grid(&kkey, w.rows)?;
        let types = (key.weight, key.act);
        let routed = ("map", map.n_experts);
        check_matmul(&kkey, types, w, act, act_row_div, out, map.n_pairs, routed)?;
        let params = chunk_params(enc, w, act_row_div, map.n_pairs);
        let rest = [
            ("experts", map.experts.as_entire_binding()),
            ("list", map.list.as_entire_binding()),
            ("items", map.items.as_entire_binding()),
            ("y", out.buffer.as_entire_binding()),
        ];
        let sets = chunk_bindings(&params, w, act, &rest);
        self.dispatch_each(enc, &kkey, &sets, grid, timer)
    }

    /// Encodes the mat-vec form of [`Self::encode_mm_id`]: one workgroup per (row tile, pair)
    /// of `routing`, no map.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_mv_id(
        &self,
        enc: &mut Encoder,
        routing: &Routing,
        w: &ExpertTensor,
        act: &GpuMatrix,
        act_row_div: usize,
        out: &GpuMatrix,
        timer: Option<&mut Timer>,
    ) -> Result<()> {
        let key = KernelKey::MvId {
            weight: w.weight,
            act: act.ty,
        };
        let n_pairs = routing.n_pairs();
        let types = (w.weight, act.ty);
        let routed = ("routing", routing.n_experts);
        check_matmul(&key, types, w, act, act_row_div, out, n_pairs, routed)?;
        let groups = key
            .row_groups(w.rows as u32)
            .expect("mat-vec has a row tile");
        let params = chunk_params(enc, w, act_row_div, n_pairs);
        let rest = [
            ("ids", routing.ids.as_entire_binding()),
            ("y", out.buffer.as_entire_binding()),
        ];
        let sets = chunk_bindings(&params, w, act, &rest);
        let n_pairs = u32::try_from(n_pairs).unwrap_or(u32::MAX);
        self.dispatch_each(enc, &key, &sets, Grid::Groups(groups, n_pairs), timer)
    }

    /// Encodes `mid = act(gate, up) * route_weight` over (T*K, F).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_act(
        &self,
        enc: &mut Encoder,
        gate: &GpuMatrix,
        up: &GpuMatrix,
        routing: &Routing,
        activation: ExpertActivation,
        mid: &GpuMatrix,
        timer: Option<&mut Timer>,
    ) -> Result<()> {
        let key = KernelKey::Act { mid: mid.ty };
        let (rows, cols) = (routing.n_pairs(), gate.cols);
        let same = |m: &GpuMatrix| m.rows == rows && m.cols == cols;
        if !same(gate)
            || !same(up)
            || !same(mid)
            || !cols.is_multiple_of(2)
            || gate.ty != ActType::F32
            || up.ty != ActType::F32
        {
            return Err(shape(
                &key.to_string(),
                format!(
                    "gate {}x{}, up {}x{}, mid {}x{} must all be {rows} x an even width (f32 inputs)",
                    gate.rows, gate.cols, up.rows, up.cols, mid.rows, mid.cols
                ),
            ));
        }
        let (clamp, limit) = match activation {
            ExpertActivation::SwiGlu => (0, 0.0),
            ExpertActivation::SwiGluClamped { limit } => (1, limit),
        };
        let params = enc.params(&ActParams {
            n_pairs: rows as u32,
            n_cols: cols as u32,
            clamp,
            limit,
        });
        self.dispatch(
            enc,
            &key,
            &[
                ("params", params.binding()),
                ("gate", gate.buffer.as_entire_binding()),
                ("up", up.buffer.as_entire_binding()),
                ("route", routing.weights.as_entire_binding()),
                ("mid", mid.buffer.as_entire_binding()),
            ],
            Grid::Items(rows * cols / 2),
            timer,
        )
    }

    /// Encodes `out (T, D) = sum_k y[t*K + k]`.
    pub fn encode_sum(
        &self,
        enc: &mut Encoder,
        y: &GpuMatrix,
        n_used: usize,
        out: &GpuMatrix,
        timer: Option<&mut Timer>,
    ) -> Result<()> {
        let key = KernelKey::Sum;
        if y.rows != out.rows * n_used
            || y.cols != out.cols
            || y.ty != ActType::F32
            || out.ty != ActType::F32
        {
            return Err(shape(
                "sum",
                format!(
                    "y {}x{} is not ({} * {n_used}) x {} f32",
                    y.rows, y.cols, out.rows, out.cols
                ),
            ));
        }
        let params = enc.params(&SumParams {
            n_tokens: out.rows as u32,
            n_cols: out.cols as u32,
            n_used: n_used as u32,
            _pad0: 0,
        });
        self.dispatch(
            enc,
            &key,
            &[
                ("params", params.binding()),
                ("y", y.buffer.as_entire_binding()),
                ("out", out.buffer.as_entire_binding()),
            ],
            Grid::Items(out.rows * out.cols),
            timer,
        )
    }

    /// Intermediates for a layer of `n_tokens` tokens, K = `n_used`, hidden `d`, expert width
    /// `f`, `mid` stored as `mid`.
    pub fn moe_buffers(
        &self,
        n_tokens: usize,
        n_used: usize,
        d: usize,
        f: usize,
        mid: ActType,
    ) -> Result<MoeBuffers> {
        self.moe_buffers_in(&self.pool, n_tokens, n_used, d, f, mid)
    }

    /// [`Self::moe_buffers`] from `pool`.
    pub(crate) fn moe_buffers_in(
        &self,
        pool: &BufferPool,
        n_tokens: usize,
        n_used: usize,
        d: usize,
        f: usize,
        mid: ActType,
    ) -> Result<MoeBuffers> {
        let pairs = n_tokens * n_used;
        Ok(MoeBuffers {
            gate: self.matrix_in(pool, pairs, f, ActType::F32, "moe gate")?,
            up: self.matrix_in(pool, pairs, f, ActType::F32, "moe up")?,
            mid: self.matrix_in(pool, pairs, f, mid, "moe mid")?,
            y: self.matrix_in(pool, pairs, d, ActType::F32, "moe y")?,
        })
    }

    /// Encodes the whole routed-MoE layer: `out (T, D)` from `x (T, D)`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_moe(
        &self,
        enc: &mut Encoder,
        x: &GpuMatrix,
        routing: &Routing,
        experts: ExpertWeights<'_, ExpertTensor>,
        opts: &MoeOptions,
        bufs: &MoeBuffers,
        out: &GpuMatrix,
        mut timer: Option<&mut Timer>,
    ) -> Result<()> {
        let ExpertWeights { gate, up, down } = experts;
        let k = routing.n_used;
        if x.rows != routing.n_tokens
            || gate.rows != up.rows
            || down.cols != gate.rows
            || down.rows != x.cols
        {
            return Err(shape(
                "moe",
                format!(
                    "x {}x{} with {} routed tokens, gate {}x{}, up {}x{}, down {}x{}",
                    x.rows,
                    x.cols,
                    routing.n_tokens,
                    gate.rows,
                    gate.cols,
                    up.rows,
                    up.cols,
                    down.rows,
                    down.cols
                ),
            ));
        }
        if bufs.mid.ty != opts.mid {
            return Err(shape(
                "moe",
                format!(
                    "mid buffer is {:?}, options ask {:?}",
                    bufs.mid.ty, opts.mid
                ),
            ));
        }
        let key = |w: &ExpertTensor, act: ActType| MatmulKey {
            weight: w.weight,
            act,
            tile: opts.tile,
            path: opts.path,
        };
        let map = if opts.mat_vec {
            None
        } else {
            let row_groups: Vec<u32> = [(gate, x.ty), (down, opts.mid)]
                .iter()
                .filter_map(|&(w, act)| KernelKey::MmId(key(w, act)).row_groups(w.rows as u32))
                .collect();
            step(&mut timer, "map");
            Some(self.encode_map(enc, routing, opts.tile, &row_groups, timer.as_deref_mut())?)
        };
        // `out (pairs, rows) = w @ act`: grouped over the map, or mat-vec over the routing.
        let matmul = |enc: &mut Encoder,
                      w: &ExpertTensor,
                      act: &GpuMatrix,
                      act_row_div: usize,
                      out: &GpuMatrix,
                      timer: Option<&mut Timer>| match &map {
            Some(map) => {
                let key = key(w, act.ty);
                self.encode_mm_id(enc, key, map, w, act, act_row_div, out, timer)
            }
            None => self.encode_mv_id(enc, routing, w, act, act_row_div, out, timer),
        };
        step(&mut timer, "gate");
        matmul(enc, gate, x, k, &bufs.gate, timer.as_deref_mut())?;
        step(&mut timer, "up");
        matmul(enc, up, x, k, &bufs.up, timer.as_deref_mut())?;
        step(&mut timer, "act");
        self.encode_act(
            enc,
            &bufs.gate,
            &bufs.up,
            routing,
            opts.activation,
            &bufs.mid,
            timer.as_deref_mut(),
        )?;
        step(&mut timer, "down");
        matmul(enc, down, &bufs.mid, 1, &bufs.y, timer.as_deref_mut())?;
        step(&mut timer, "sum");
        self.encode_sum(enc, &bufs.y, k, out, timer.as_deref_mut())?;
        step(&mut timer, "");
        Ok(())
    }

    /// The routed-MoE layer (see the module docs): allocates its intermediates and output,
    /// encodes and submits. `out (T, D) = sum_k w[t,k] * down[e] @ act(gate[e] @ x[t],
    /// up[e] @ x[t])`.
    pub fn moe(
        &self,
        x: &GpuMatrix,
        routing: &Routing,
        experts: ExpertWeights<'_, ExpertTensor>,
        opts: &MoeOptions,
    ) -> Result<GpuMatrix> {
        let bufs = self.moe_buffers(x.rows, routing.n_used, x.cols, experts.gate.rows, opts.mid)?;
        let out = self.matrix(x.rows, x.cols, ActType::F32, "moe out")?;
        self.submit("moe", |enc| {
            self.encode_moe(enc, x, routing, experts, opts, &bufs, &out, None)
        })?;
        Ok(out)
    }

    /// Encodes with `f` into a fresh encoder and submits, inside error scopes naming `op`.
    pub fn submit<T>(&self, op: &str, f: impl FnOnce(&mut Encoder) -> Result<T>) -> Result<T> {
        self.scoped(op, || {
            let mut enc = self.encoder(op);
            let value = f(&mut enc)?;
            self.submit_encoder(enc)?;
            Ok(value)
        })
    }
}

/// Checks the operands of a grouped matmul or mat-vec `key` of `(weight, act)` types: `w`,
/// `act` (one row per `act_row_div` pairs) and `out` for `n_pairs` pairs routed by a map or a
/// routing (`routed`) over as many experts as `w` has.
#[allow(clippy::too_many_arguments)]
fn check_matmul(
    key: &KernelKey,
    (weight, act_ty): (WeightType, ActType),
    w: &ExpertTensor,
    act: &GpuMatrix,
    act_row_div: usize,
    out: &GpuMatrix,
    n_pairs: usize,
    (source, n_experts): (&str, usize),
) -> Result<()> {
    let op = key.to_string();
    if w.weight != weight || act.ty != act_ty {
        return Err(shape(
            &op,
            format!("given {} weights and {:?} activations", w.weight, act.ty),
        ));
    }
    if !w.cols.is_multiple_of(32)
        || act.cols != w.cols
        || out.cols != w.rows
        || out.ty != ActType::F32
    {
        return Err(shape(
            &op,
            format!(
                "{} is {} x {} (cols must be a multiple of 32), activations have {} cols, \
                 the f32 output has {} cols ({:?})",
                w.name, w.rows, w.cols, act.cols, out.cols, out.ty
            ),
        ));
    }
    if act_row_div == 0 || act.rows * act_row_div != n_pairs || out.rows != n_pairs {
        return Err(shape(
            &op,
            format!(
                "{n_pairs} pairs need {} activation rows (one per {act_row_div} pairs) and \
                 {n_pairs} output rows; given {} and {}",
                n_pairs / act_row_div.max(1),
                act.rows,
                out.rows
            ),
        ));
    }
    if n_experts != w.experts {
        return Err(shape(
            &op,
            format!(
                "{source} over {n_experts} experts, {} has {}",
                w.name, w.experts
            ),
        ));
    }
    Ok(())
}

/// Labels the passes that follow with a MoE sub-stage, for the stage profiler.
fn step(timer: &mut Option<&mut Timer>, name: &'static str) {
    if let Some(t) = timer.as_deref_mut() {
        t.set_detail(Some(name));
    }
}

/// The parameters of a matmul over each weight chunk of `w`, in order.
fn chunk_params(
    enc: &mut Encoder,
    w: &ExpertTensor,
    act_row_div: usize,
    n_pairs: usize,
) -> Vec<ParamSlot> {
    w.chunks
        .iter()
        .map(|chunk| {
            enc.params(&MatmulParams {
                n_rows: w.rows as u32,
                n_cols: w.cols as u32,
                act_row_div: act_row_div as u32,
                expert_base: chunk.expert_base,
                expert_count: chunk.expert_count,
                n_pairs: n_pairs as u32,
                _pad0: 0,
                _pad1: 0,
            })
        })
        .collect()
}

/// Per weight chunk of `w` (with its `params`): the bindings of `wgsl/matmul.wgsl` (params,
/// weights, act), then the kernel's own `rest`.
fn chunk_bindings<'a>(
    params: &'a [ParamSlot],
    w: &'a ExpertTensor,
    act: &'a GpuMatrix,
    rest: &[(&'a str, wgpu::BindingResource<'a>)],
) -> Vec<Vec<(&'a str, wgpu::BindingResource<'a>)>> {
    w.chunks
        .iter()
        .zip(params)
        .map(|(chunk, params)| {
            let shared = [
                ("params", params.binding()),
                ("weights", chunk.buffer.as_entire_binding()),
                ("act", act.buffer.as_entire_binding()),
            ];
            shared.into_iter().chain(rest.iter().cloned()).collect()
        })
        .collect()
}
