//! Tensor names resolved once into typed per-layer structs and uploaded to a backend, with every
//! shape checked against the config first so a malformed file fails at load with the tensor's
//! name, never inside an op.

use crate::gguf::{GgufFile, TensorInfo};
use crate::model::deepseek4::Deepseek4Weights;
use crate::model::gptoss::GptOssWeights;
use crate::model::qwen35moe::Qwen35MoeWeights;
use crate::model::{Backend, GateUp, ModelConfig, WeightData};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Attention weights of one block.
#[derive(Debug)]
pub struct AttentionWeights<W> {
    /// `attn_norm`: RMS norm before attention.
    pub norm: W,
    /// `attn_q`, `attn_k` and `attn_v` (`[D, n_heads * head_dim]`, `[D, n_kv_heads *
    /// head_dim]` twice) stacked by rows: one to three tensors whose rows, in order, are q's,
    /// k's and v's rows. Neighbours of one type and width are one tensor, so one matmul
    /// ([`crate::model::Backend::project`]) computes them.
    pub qkv: Vec<W>,
    /// `attn_output` `[n_heads * head_dim, D]`.
    pub out: W,
    /// q, k and v biases, concatenated (qwen2 family).
    pub qkv_bias: Option<W>,
    /// Per-head q and k norms (qwen3 family).
    pub qk_norm: Option<[W; 2]>,
}

/// A SwiGLU feed-forward network.
#[derive(Debug)]
pub struct DenseFfn<W> {
    /// `[D, F]`.
    pub gate: W,
    /// `[D, F]`.
    pub up: W,
    /// `[F, D]`.
    pub down: W,
}

/// The feed-forward half of a block.
#[derive(Debug)]
pub enum FfnWeights<W> {
    /// A dense SwiGLU FFN.
    Dense(DenseFfn<W>),
    /// Routed experts, optionally with a shared expert.
    Moe {
        /// `ffn_gate_inp` `[D, E]`: router logits.
        router: W,
        /// `ffn_gate_exps` and `ffn_up_exps` `[D, F, E]`, as [`Backend::upload_gate_up`]
        /// uploaded them.
        gate_up: GateUp<W>,
        /// `ffn_down_exps` `[F, D, E]`.
        down: W,
        /// Shared expert (qwen2moe) and its sigmoid gate `[D]`.
        shared: Option<(DenseFfn<W>, Option<W>)>,
    },
}

/// One transformer block.
#[derive(Debug)]
pub struct LayerWeights<W> {
    /// Attention half.
    pub attn: AttentionWeights<W>,
    /// `ffn_norm`: RMS norm before the FFN.
    pub ffn_norm: W,
    /// FFN half.
    pub ffn: FfnWeights<W>,
}

/// All weights of a model.
#[derive(Debug)]
pub enum ModelWeights<W> {
    /// The llama-like architectures: one residual stream, GQA attention.
    Standard(StandardWeights<W>),
    /// deepseek4's.
    Deepseek4(Deepseek4Weights<W>),
    /// qwen35moe's.
    Qwen35Moe(Qwen35MoeWeights<W>),
    /// gpt-oss's.
    GptOss(GptOssWeights<W>),
}

/// A model's embedding table, blocks of type `L` and output head.
#[derive(Debug)]
pub struct Blocks<L, W> {
    /// `token_embd` `[D, vocab]`.
    pub embed: W,
    /// Blocks.
    pub layers: Vec<L>,
    /// `output_norm` `[D]`.
    pub output_norm: W,
    /// `output` `[D, vocab]`; `None` when tied to the embedding table.
    pub output: Option<W>,
}

/// All weights of a llama-like model.
pub type StandardWeights<W> = Blocks<LayerWeights<W>, W>;

/// Upload progress, reported after each tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    /// Bytes uploaded so far.
    pub bytes_done: u64,
    /// Bytes of all tensors the model uses.
    pub bytes_total: u64,
}

/// Uploads tensors of one file to a backend, shapes checked, progress reported per tensor.
pub(crate) struct Loader<'a, B: Backend> {
    file: &'a GgufFile,
    pub(crate) backend: &'a mut B,
    progress: &'a mut dyn FnMut(LoadProgress),
    done: u64,
    total: u64,
}

impl<'a, B: Backend> Loader<'a, B> {
    /// A loader whose progress counts every tensor of `file`.
    pub(crate) fn new(
        file: &'a GgufFile,
        backend: &'a mut B,
        progress: &'a mut dyn FnMut(LoadProgress),
    ) -> Self {
        let total = file.tensors().iter().map(|t| t.len as u64).sum();
        Loader {
            file,
            backend,
            progress,
            done: 0,
            total,
        }
    }

    /// The embedding table, `cfg.n_layers` blocks that `layer` loads, and the output head.
    pub(crate) fn blocks<L>(
        &mut self,
        cfg: &ModelConfig,
        mut layer: impl FnMut(&mut Self, usize) -> Result<L>,
    ) -> Result<Blocks<L, B::Weight>> {
        let (d, vocab) = (cfg.d_model, cfg.n_vocab);
        let embed = self.get("token_embd.weight", &[d, vocab])?;
        let layers = (0..cfg.n_layers)
            .map(|il| layer(self, il))
            .collect::<Result<Vec<_>>>()?;
        Ok(Blocks {
            embed,
            layers,
            output_norm: self.get("output_norm.weight", &[d])?,
            output: self.opt("output.weight", &[d, vocab])?,
        })
    }

    pub(crate) fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        let file: &'a GgufFile = self.file;
        file.tensor(name)
            .ok_or_else(|| Error::InvalidModel(format!("tensor {name} is missing")))
    }

    /// Tensor `name`, checked to have `dims`.
    pub(crate) fn data<'n>(&self, name: &'n str, dims: &[usize]) -> Result<WeightData<'n>>
    where
        'a: 'n,
    {
        let info = self.info(name)?;
        if info.dims != dims {
            return Err(Error::InvalidModel(format!(
                "tensor {name} has dims {:?}, the config implies {dims:?}",
                info.dims
            )));
        }
        Ok(WeightData {
            name,
            ty: info.ty,
            dims: &info.dims,
            bytes: self.file.tensor_bytes(info),
        })
    }

    pub(crate) fn uploaded(&mut self, bytes: usize) {
        self.done += bytes as u64;
        (self.progress)(LoadProgress {
            bytes_done: self.done,
            bytes_total: self.total,
        });
    }

    pub(crate) fn get(&mut self, name: &str, dims: &[usize]) -> Result<B::Weight> {
        let data = self.data(name, dims)?;
        self.upload(data)
    }

    /// A table read value by value rather than multiplied (a compressor's position bias),
    /// uploaded as F32 whatever type the file stores it in, so backends index it directly.
    pub(crate) fn get_f32(&mut self, name: &str, dims: &[usize]) -> Result<B::Weight> {
        let data = self.data(name, dims)?;
        let mut values = vec![0f32; dims.iter().product()];
        crate::quant::dequantize(data.ty, data.bytes, &mut values)?;
        let widened = WeightData {
            ty: GgmlType::F32,
            bytes: bytemuck::cast_slice(&values),
            ..data
        };
        let w = self
            .backend
            .upload(widened)
            .map_err(|e| Error::InvalidModel(format!("tensor {name}: {e}")))?;
        // Progress counts the file's bytes.
        self.uploaded(data.bytes.len());
        Ok(w)
    }

    /// Uploads `data`, an error naming its tensor.
    pub(crate) fn upload(&mut self, data: WeightData<'_>) -> Result<B::Weight> {
        let w = self
            .backend
            .upload(data)
            .map_err(|e| Error::InvalidModel(format!("tensor {}: {e}", data.name)))?;
        self.uploaded(data.bytes.len());
        Ok(w)
    }

    pub(crate) fn gate_up(&mut self, p: &str, dims: &[usize]) -> Result<GateUp<B::Weight>> {
        let (gate, up) = (
            format!("{p}ffn_gate_exps.weight"),
            format!("{p}ffn_up_exps.weight"),
        );
        let (gate, up) = (self.data(&gate, dims)?, self.data(&up, dims)?);
        let w = self.backend.upload_gate_up(gate, up)?;
        self.uploaded(gate.bytes.len() + up.bytes.len());
        Ok(w)
    }

    /// q, k and v of block `p`, neighbours of one type stacked into one tensor.
    pub(crate) fn qkv(
        &mut self,
        p: &str,
        d: usize,
        q_width: usize,
        kv_width: usize,
    ) -> Result<Vec<B::Weight>> {
        let names = ["attn_q", "attn_k", "attn_v"].map(|n| format!("{p}{n}.weight"));
        let parts = [
            self.data(&names[0], &[d, q_width])?,
            self.data(&names[1], &[d, kv_width])?,
            self.data(&names[2], &[d, kv_width])?,
        ];
        self.stack(&parts)
    }

    /// Matrices of one input width whose outputs are wanted side by side (one
    /// [`Backend::project`]): neighbours of one type are stacked into one tensor (whole rows of
    /// whole blocks, so the bytes concatenate), others uploaded as they are.
    pub(crate) fn stack(&mut self, parts: &[WeightData<'_>]) -> Result<Vec<B::Weight>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < parts.len() {
            let ty = parts[start].ty;
            let end = start + parts[start..].iter().take_while(|w| w.ty == ty).count();
            let group = &parts[start..end];
            let w = match group {
                // Alone in its type: uploaded as the file holds it, no copy.
                [one] => self.backend.upload(*one)?,
                _ => {
                    let d = group[0].dims[0];
                    let rows: usize = group.iter().map(|w| w.dims[1]).sum();
                    let bytes = group.iter().map(|w| w.bytes).collect::<Vec<_>>().concat();
                    let name = group.iter().map(|w| w.name).collect::<Vec<_>>().join("+");
                    self.backend.upload(WeightData {
                        name: &name,
                        ty,
                        dims: &[d, rows],
                        bytes: &bytes,
                    })?
                }
            };
            self.uploaded(group.iter().map(|w| w.bytes.len()).sum());
            out.push(w);
            start = end;
        }
        Ok(out)
    }

    /// The q, k and v biases of block `p` as one f32 vector.
    pub(crate) fn qkv_bias(
        &mut self,
        p: &str,
        q_width: usize,
        kv_width: usize,
    ) -> Result<B::Weight> {
        let widths = [q_width, kv_width, kv_width];
        let mut values = Vec::with_capacity(q_width + 2 * kv_width);
        for (n, width) in ["attn_q", "attn_k", "attn_v"].iter().zip(widths) {
            let name = format!("{p}{n}.bias");
            let data = self.data(&name, &[width])?;
            let mut v = vec![0f32; width];
            crate::quant::dequantize(data.ty, data.bytes, &mut v)?;
            values.extend(v);
            self.uploaded(data.bytes.len());
        }
        self.backend.upload(WeightData {
            name: &format!("{p}attn_qkv.bias"),
            ty: GgmlType::F32,
            dims: &[values.len()],
            bytes: bytemuck::cast_slice(&values),
        })
    }

    pub(crate) fn opt(&mut self, name: &str, dims: &[usize]) -> Result<Option<B::Weight>> {
        match self.file.tensor(name) {
            Some(_) => self.get(name, dims).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn dense(
        &mut self,
        p: &str,
        suffix: &str,
        d: usize,
        f: usize,
    ) -> Result<DenseFfn<B::Weight>> {
        Ok(DenseFfn {
            gate: self.get(&format!("{p}ffn_gate{suffix}.weight"), &[d, f])?,
            up: self.get(&format!("{p}ffn_up{suffix}.weight"), &[d, f])?,
            down: self.get(&format!("{p}ffn_down{suffix}.weight"), &[f, d])?,
        })
    }

    fn ffn_rows(&self, name: &str) -> Result<usize> {
        let info = self.info(name)?;
        info.dims.get(1).copied().ok_or_else(|| {
            Error::InvalidModel(format!(
                "tensor {name} has dims {:?}, expected 2-D",
                info.dims
            ))
        })
    }

    fn layer(&mut self, cfg: &ModelConfig, il: usize) -> Result<LayerWeights<B::Weight>> {
        let p = format!("blk.{il}.");
        let (d, hd) = (cfg.d_model, cfg.head_dim);
        let (q_width, kv_width) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
        let name = |n: &str| format!("{p}{n}");
        let qkv_bias = match self.file.tensor(&name("attn_q.bias")) {
            Some(_) => Some(self.qkv_bias(&p, q_width, kv_width)?),
            None => None,
        };
        let qk_norm = if cfg.qk_norm {
            Some([
                self.get(&name("attn_q_norm.weight"), &[hd])?,
                self.get(&name("attn_k_norm.weight"), &[hd])?,
            ])
        } else {
            None
        };
        let attn = AttentionWeights {
            norm: self.get(&name("attn_norm.weight"), &[d])?,
            qkv: self.qkv(&p, d, q_width, kv_width)?,
            out: self.get(&name("attn_output.weight"), &[q_width, d])?,
            qkv_bias,
            qk_norm,
        };
        let ffn_norm = self.get(&name("ffn_norm.weight"), &[d])?;
        let ffn = match (&cfg.moe, self.file.tensor(&name("ffn_gate_inp.weight"))) {
            (Some(m), Some(_)) => {
                let (e, f) = (m.n_experts, m.expert_ff);
                let shared = match self.file.tensor(&name("ffn_gate_shexp.weight")) {
                    Some(_) => {
                        let fs = self.ffn_rows(&name("ffn_gate_shexp.weight"))?;
                        let ffn = self.dense(&p, "_shexp", d, fs)?;
                        Some((ffn, self.opt(&name("ffn_gate_inp_shexp.weight"), &[d])?))
                    }
                    None => None,
                };
                FfnWeights::Moe {
                    router: self.get(&name("ffn_gate_inp.weight"), &[d, e])?,
                    gate_up: self.gate_up(&p, &[d, f, e])?,
                    down: self.get(&name("ffn_down_exps.weight"), &[f, d, e])?,
                    shared,
                }
            }
            _ => {
                let f = self.ffn_rows(&name("ffn_gate.weight"))?;
                FfnWeights::Dense(self.dense(&p, "", d, f)?)
            }
        };
        Ok(LayerWeights {
            attn,
            ffn_norm,
            ffn,
        })
    }
}

/// Uploads every weight `cfg` needs from `file` to `backend`, reporting progress per tensor.
pub fn load_weights<B: Backend>(
    file: &GgufFile,
    cfg: &ModelConfig,
    backend: &mut B,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<StandardWeights<B::Weight>> {
    Loader::new(file, backend, progress).blocks(cfg, |l, il| l.layer(cfg, il))
}
