//! The kernels a model will run, known at load: from its config, the backend's options and
//! the types of the weights it uploaded. The set errs on the side of
//! more (every tile width, both activation types of an expert tensor, every element-wise op):
//! a key that is prepared and never used costs one compilation at load, one that is missed
//! only compiles on first use as before.

use moetile::model::ModelConfig;
use moetile::tile::TileWidth;
use moetile_codegen::{
    ActType, DELTA_HEAD_DIMS, Deepseek4Step, DeltaStep, EltOp, HEAD_DIMS, HyperStep, KernelKey,
    MatmulKey, MvEpilogue, Path, WeightType,
};

use crate::backend::BackendOptions;

/// How the forward pass multiplies by an uploaded weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum WeightUse {
    /// A dense projection (or the embedding table): one-expert matmuls over f32 activations.
    Dense(WeightType),
    /// Routed experts: gate and up over f32 activations, down over `mid` (the mat-vec path:
    /// `mv_sum`, or `mv_id` and `sum` over a `down` of several weight chunks).
    Experts(WeightType),
    /// Routed experts' gate and up as one tensor of interleaved rows: over f32 activations,
    /// then `act` over interleaved columns; the mat-vec path: `mv_glu` into `mid`.
    GateUp(WeightType),
}

/// Every kernel a forward pass of `config` may run on weights used as `weights`.
pub(crate) fn model_kernels(
    config: &ModelConfig,
    options: &BackendOptions,
    weights: &[WeightUse],
) -> Vec<KernelKey> {
    let mut keys = vec![
        KernelKey::RmsNorm,
        KernelKey::Eltwise(EltOp::Add),
        KernelKey::Eltwise(EltOp::AddRow),
        KernelKey::Eltwise(EltOp::MulSigmoidRow),
        // A dense FFN's SwiGLU.
        KernelKey::Act {
            mid: ActType::F32,
            interleaved: false,
            biased: false,
        },
    ];
    let head_dim = config.head_dim as u32;
    // gpt-oss's heads have sinks, its experts biases.
    let gptoss = config.gptoss.is_some();
    if HEAD_DIMS.contains(&head_dim) {
        keys.extend([
            KernelKey::AttnInput {
                kv: options.kv,
                norm: config.qk_norm,
                seq_table: false,
            },
            // Batched decode over a cache arena (`crate::attention::attend_seqs`).
            KernelKey::AttnInput {
                kv: options.kv,
                norm: config.qk_norm,
                seq_table: true,
            },
            KernelKey::AttnPrefill {
                head_dim,
                kv: options.kv,
                sinks: gptoss,
            },
            KernelKey::AttnDecode {
                head_dim,
                kv: options.kv,
                seq_table: false,
            },
            KernelKey::AttnDecode {
                head_dim,
                kv: options.kv,
                seq_table: true,
            },
            KernelKey::AttnCombine {
                head_dim,
                sinks: gptoss,
            },
        ]);
    }
    if let Some(q) = &config.qwen35moe {
        keys.extend([KernelKey::Eltwise(EltOp::MulSigmoid), KernelKey::ConvSilu]);
        let head_dim = q.delta_net.head_dim as u32;
        if DELTA_HEAD_DIMS.contains(&head_dim) {
            keys.extend(DeltaStep::ALL.map(|step| KernelKey::DeltaRule { head_dim, step }));
        }
    }
    if config.deepseek4.is_some() {
        keys.push(KernelKey::Eltwise(EltOp::Repeat));
        keys.extend([HyperStep::Pre, HyperStep::Post, HyperStep::Head].map(KernelKey::Hyper));
        keys.push(KernelKey::CompressorPool);
        keys.extend(Deepseek4Step::ALL.map(KernelKey::Deepseek4));
    }
    if config.moe.is_some() {
        keys.extend([
            KernelKey::Route,
            KernelKey::Act {
                mid: options.mid,
                interleaved: false,
                biased: gptoss,
            },
            KernelKey::Sum { biased: gptoss },
        ]);
        keys.extend(TileWidth::ALL.map(|tile| KernelKey::Map { tile }));
    }
    let mat_vec = options.mat_vec_max_tokens > 0;
    for &usage in weights {
        let (weight, acts, path) = match usage {
            WeightUse::Dense(weight) => {
                keys.push(KernelKey::Embed { weight });
                let path = if weight == WeightType::F32 {
                    Path::Reg
                } else {
                    options.path
                };
                (weight, vec![ActType::F32], path)
            }
            WeightUse::Experts(weight) => (weight, vec![ActType::F32, options.mid], options.path),
            WeightUse::GateUp(weight) => {
                keys.push(KernelKey::Act {
                    mid: options.mid,
                    interleaved: true,
                    biased: gptoss,
                });
                (weight, vec![ActType::F32], options.path)
            }
        };
        for &act in &acts {
            keys.extend(TileWidth::ALL.map(|tile| {
                KernelKey::MmId(MatmulKey {
                    weight,
                    act,
                    tile,
                    path,
                })
            }));
        }
        if mat_vec {
            // (act, epilogue, norm): dense projections read x plain or normed (the norm
            // before them folded in); gate/up always normed (the forward pass gives `moe` the
            // FFN norm). gpt-oss's fused expert mat-vecs add the experts' biases.
            let epilogues = match usage {
                WeightUse::Dense(_) => vec![
                    (ActType::F32, MvEpilogue::Rows, false),
                    (ActType::F32, MvEpilogue::Rows, true),
                ],
                WeightUse::Experts(_) => vec![
                    (ActType::F32, MvEpilogue::Rows, false),
                    (options.mid, MvEpilogue::Rows, false),
                    (options.mid, MvEpilogue::Sum, false),
                ],
                WeightUse::GateUp(_) => {
                    vec![(ActType::F32, MvEpilogue::Glu { mid: options.mid }, true)]
                }
            };
            keys.extend(
                epilogues
                    .into_iter()
                    .map(|(act, epilogue, norm)| KernelKey::MvId {
                        weight,
                        act,
                        epilogue,
                        norm,
                        int8: weight.mat_vec_int8(options.int8_mat_vec),
                        biased: gptoss && epilogue != MvEpilogue::Rows,
                    }),
            );
        }
    }
    let mut unique = Vec::with_capacity(keys.len());
    for key in keys {
        if !unique.contains(&key) {
            unique.push(key);
        }
    }
    unique
}
