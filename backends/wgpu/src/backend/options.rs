//! [`BackendOptions`]: how the backend stores and computes what the model leaves open.

use moetile::model::{ExpertActivation, MoeParams};
use moetile::tile::TileWidth;
use moetile_codegen::{ActType, Path};

use crate::context::WgpuContext;
use crate::moe::{MoeOptions, mat_vec_max_tokens};

/// How the backend stores and computes what the model leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendOptions {
    /// KV-cache storage: F16 (the default: half the memory, ~1e-3 relative error in attention)
    /// or F32 (exact, for verification).
    pub kv: ActType,
    /// Storage of the routed experts' intermediate `mid` (the input of `down`).
    pub mid: ActType,
    /// Matmul path of the grouped and dense matmuls (F32 weights always use `Path::Reg`).
    pub path: Path,
    /// Fill every output, intermediate and KV cache with NaN before kernels write them, so an
    /// element a kernel fails to write shows up (tests).
    pub poison: bool,
    /// The largest batch whose matmuls run the mat-vec kernels instead of the tiled ones
    /// (0: never); the default is [`mat_vec_max_tokens`] for the device.
    pub mat_vec_max_tokens: usize,
    /// Mat-vecs quantize their activations to int8 per 32 values and multiply by integer dot
    /// products, for the weight types that have such a kernel (`mv_id_*_int8`): as
    /// llama.cpp's decode, a fraction of the work per weight for an error far below the
    /// weights' own quantization. Off, they stage f32 (exact up to f32 rounding).
    pub int8_mat_vec: bool,
    /// Batches of more than one token run qwen35moe's gated delta rule in its chunked (WY)
    /// form (`delta_wy`, `delta_scan`: a chunk of tokens per sequential step) rather than
    /// token by token; decode steps always run the recurrent form. Off by default: not yet
    /// measured faster on a GPU.
    pub chunked_delta_net: bool,
}

impl BackendOptions {
    /// The defaults on `ctx`: f16 KV cache, the `mid` type and fastest path
    /// [`MoeOptions::new`] picks for the device, int8 mat-vec activations, no poisoning.
    pub fn for_device(ctx: &WgpuContext) -> BackendOptions {
        let moe = MoeOptions::new(
            ctx,
            &MoeParams {
                activation: ExpertActivation::SwiGlu,
                tile: TileWidth::T32,
            },
            usize::MAX,
        );
        BackendOptions {
            kv: ActType::F16,
            mid: moe.mid,
            path: moe.path,
            poison: false,
            mat_vec_max_tokens: mat_vec_max_tokens(ctx.profile(), moe.path),
            int8_mat_vec: moe.int8,
            chunked_delta_net: false,
        }
    }

    /// The exact configuration, which every device runs: f32 KV cache and `mid`, register
    /// tiles, mat-vec for single tokens (so decode steps take it on every adapter) over f32
    /// activations, no poisoning. It isolates kernel and driver errors from f16 rounding (`moetile verify`,
    /// whole-model tests).
    pub fn exact() -> BackendOptions {
        BackendOptions {
            kv: ActType::F32,
            mid: ActType::F32,
            path: Path::Reg,
            poison: false,
            mat_vec_max_tokens: 1,
            int8_mat_vec: false,
            chunked_delta_net: false,
        }
    }
}
