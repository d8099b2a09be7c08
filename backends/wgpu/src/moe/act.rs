//! The element-wise ends of the routed-MoE layer: the activation between up/gate and down, and
//! the sum over each token's K experts.

use moetile::model::ExpertActivation;
use moetile_codegen::params::{ActParams, SumParams};
use moetile_codegen::{ActType, KernelKey};

use crate::buffers::GpuMatrix;
use crate::dispatch::Grid;
use crate::error::{Result, shape};
use crate::moe::Routing;
use crate::recorder::Recorder;

/// Records `mid = activation(gate, up) * route_weight` over (T*K, F).
pub fn act(
    rec: &mut Recorder<'_>,
    gate: &GpuMatrix,
    up: &GpuMatrix,
    routing: &Routing,
    activation: ExpertActivation,
    mid: &GpuMatrix,
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
    let params = rec.params(&ActParams {
        n_pairs: rows as u32,
        n_cols: cols as u32,
        clamp,
        limit,
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("gate", gate.buffer.as_entire_binding()),
            ("up", up.buffer.as_entire_binding()),
            ("route", routing.weights.as_entire_binding()),
            ("mid", mid.buffer.as_entire_binding()),
        ],
        Grid::Items(rows * cols / 2),
    )
}

/// Records `out (T, D) = sum_k y[t*K + k]`, K = `n_used`.
pub fn sum(rec: &mut Recorder<'_>, y: &GpuMatrix, n_used: usize, out: &GpuMatrix) -> Result<()> {
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
    let params = rec.params(&SumParams {
        n_tokens: out.rows as u32,
        n_cols: out.cols as u32,
        n_used: n_used as u32,
        _pad0: 0,
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("y", y.buffer.as_entire_binding()),
            ("out", out.buffer.as_entire_binding()),
        ],
        Grid::Items(out.rows * out.cols),
    )
}
