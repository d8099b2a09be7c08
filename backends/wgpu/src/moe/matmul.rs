//! The grouped matmul (`mm_id`, over an [`ExpertMap`]) and mat-vec (`mv_id`, over a
//! [`Routing`]): `out (P, rows) = W[e(p)] @ act[p / act_row_div]` for every pair p.

use moetile_codegen::params::MatmulParams;
use moetile_codegen::{ActType, KernelKey, MatmulKey};

use crate::buffers::GpuMatrix;
use crate::dispatch::Grid;
use crate::encoder::ParamSlot;
use crate::error::{Result, WgpuError, shape};
use crate::layout::ExpertTensor;
use crate::moe::{ExpertMap, Routing};
use crate::recorder::Recorder;

/// The operands of a grouped matmul or mat-vec: weights, activations (one row per
/// `act_row_div` pairs: K for gate and up, which read each token's row once per expert, 1 for
/// down) and the f32 output, one row per pair.
#[derive(Debug, Clone, Copy)]
pub struct Matmul<'a> {
    /// `[cols, rows, experts]` weights.
    pub w: &'a ExpertTensor,
    /// Activations, `w.cols` wide.
    pub act: &'a GpuMatrix,
    /// Pairs per activation row.
    pub act_row_div: usize,
    /// `(pairs, w.rows)` f32.
    pub out: &'a GpuMatrix,
}

/// Records `mm.out = W[e(p)] @ act[p / act_row_div]` for every pair p of `map` with kernel
/// `key`: one workgroup per (work item, row tile), once per weight chunk.
pub fn mm_id(
    rec: &mut Recorder<'_>,
    key: MatmulKey,
    map: &ExpertMap,
    mm: Matmul<'_>,
) -> Result<()> {
    let kkey = KernelKey::MmId(key);
    if let Err(why) = rec.profile().supports(key.path) {
        return Err(WgpuError::MissingFeature {
            adapter: rec.profile().describe(),
            what: kkey.to_string(),
            feature: why,
            fix: "use the register-tile path (Path::Reg), which runs everywhere",
        });
    }
    let grid = map.grid(&kkey, mm.w.rows)?;
    if mm.w.weight != key.weight || mm.act.ty != key.act {
        return Err(shape(
            &kkey.to_string(),
            format!(
                "given {} weights and {:?} activations",
                mm.w.weight, mm.act.ty
            ),
        ));
    }
    mm.check(&kkey, map.n_pairs, "map", map.n_experts)?;
    let params = mm.chunk_params(rec, map.n_pairs);
    let rest = [
        ("experts", map.experts.as_entire_binding()),
        ("list", map.list.as_entire_binding()),
        ("items", map.items.as_entire_binding()),
        ("y", mm.out.buffer.as_entire_binding()),
    ];
    let sets = mm.chunk_bindings(&params, &rest);
    rec.dispatch_each(&kkey, &sets, grid)
}

/// The mat-vec form of [`mm_id`]: one workgroup per (row tile, pair) of `routing`, no map.
pub fn mv_id(rec: &mut Recorder<'_>, routing: &Routing, mm: Matmul<'_>) -> Result<()> {
    let key = KernelKey::MvId {
        weight: mm.w.weight,
        act: mm.act.ty,
    };
    let n_pairs = routing.n_pairs();
    mm.check(&key, n_pairs, "routing", routing.n_experts)?;
    let groups = key
        .row_groups(mm.w.rows as u32)
        .expect("mat-vec has a row tile");
    let params = mm.chunk_params(rec, n_pairs);
    let rest = [
        ("ids", routing.ids.as_entire_binding()),
        ("y", mm.out.buffer.as_entire_binding()),
    ];
    let sets = mm.chunk_bindings(&params, &rest);
    let n_pairs = u32::try_from(n_pairs).unwrap_or(u32::MAX);
    rec.dispatch_each(&key, &sets, Grid::Groups(groups, n_pairs))
}

impl<'a> Matmul<'a> {
    /// Checks the operands of `key` for `n_pairs` pairs routed by `source` (a map or a
    /// routing) over `n_experts` experts, as many as `w` must have.
    fn check(&self, key: &KernelKey, n_pairs: usize, source: &str, n_experts: usize) -> Result<()> {
        let Matmul {
            w,
            act,
            act_row_div,
            out,
        } = *self;
        let op = key.to_string();
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

    /// The parameters of the matmul over each weight chunk of `w`, in order.
    fn chunk_params(&self, rec: &mut Recorder<'_>, n_pairs: usize) -> Vec<ParamSlot> {
        let w = self.w;
        w.chunks
            .iter()
            .map(|chunk| {
                rec.params(&MatmulParams {
                    n_rows: w.rows as u32,
                    n_cols: w.cols as u32,
                    act_row_div: self.act_row_div as u32,
                    expert_base: chunk.expert_base,
                    expert_count: chunk.expert_count,
                    n_pairs: n_pairs as u32,
                    _pad0: 0,
                    _pad1: 0,
                })
            })
            .collect()
    }

    /// Per weight chunk of `w` (with its `params`): the bindings of `wgsl/matmul.wgsl`
    /// (params, weights, act), then the kernel's own `rest`.
    fn chunk_bindings<'b>(
        &self,
        params: &'b [ParamSlot],
        rest: &[(&'b str, wgpu::BindingResource<'b>)],
    ) -> Vec<Vec<(&'b str, wgpu::BindingResource<'b>)>>
    where
        'a: 'b,
    {
        self.w
            .chunks
            .iter()
            .zip(params)
            .map(|(chunk, params)| {
                let shared = [
                    ("params", params.binding()),
                    ("weights", chunk.buffer.as_entire_binding()),
                    ("act", self.act.buffer.as_entire_binding()),
                ];
                shared.into_iter().chain(rest.iter().cloned()).collect()
            })
            .collect()
    }
}
