//! Tile-cap tuning (`moetile tune`): the token-tile widths timed at a model's routed-expert
//! matmuls on one adapter, each checked first, and the outcome kept in a [`TuningRecord`].
//!
//! The cap of the alignment rule (`moetile::tile::TilePolicy::Alignment`) was a hand-set 128; which
//! width is fastest depends on the GPU, the driver, the expert shape and the weight type (on the
//! H100, a DeepSeek-V4-Flash-shaped model prefilled 2048 tokens 19% faster with cap 64 than with
//! the default 128: issue 12). So [`tune`] times every width on every matmul path the device runs,
//! at the shapes a model's experts have ([`expert_matmuls`]: gate/up and down per weight type), and
//! the record keeps, per (adapter, path, shape), the milliseconds of each width. A later run asks
//! [`TuningRecord::tuned_cap`] for the width the model's matmuls together run fastest with, and
//! uses it when no cap is set (`moetile::RuntimeConfig::tuned_tile_max`: below an explicit setting
//! and `MOETILE_TILE_MAX`).
//!
//! Every kernel is checked against an f64 reference on a NaN-poisoned output before it is
//! timed (as `moetile bench kernels` does, with the same code). A path whose kernel fails is
//! recorded as unusable on that adapter and driver, and contexts opened with the record
//! ([`crate::ContextOptions::tuning_dir`]) do not run it: the guard for paths no test machine
//! runs, such as the 8x8 cooperative one meant for Apple GPUs. The register path has no
//! fallback; its failure is recorded and reported, not avoided.

mod record;

pub use record::{TUNING_FILE, TUNING_VERSION, TunedEntry, TuningRecord, UnusablePath};

use std::path::{Path as FsPath, PathBuf};

use moetile::gguf::GgufFile;
use moetile::model::ModelConfig;
use moetile::tile::TileWidth;
use moetile_codegen::{ActType, KernelKey, MatmulKey, Path, WeightType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::adapter::Profile;
use crate::bench::{self, Batch, ExpertPool};
use crate::context::WgpuContext;
use crate::error::WgpuError;
use crate::layout::{self, GgmlWeight};
use crate::moe;
use crate::recorder::Recorder;

/// An adapter and driver as the record names them: a driver update is a new adapter, whose
/// kernels are measured (and checked) again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterId {
    /// The adapter's name.
    pub name: String,
    /// The graphics API (`Vulkan`, `Metal`...): one device can be two adapters.
    pub api: String,
    /// Driver name and version.
    pub driver: String,
}

impl AdapterId {
    /// The adapter of `profile`.
    pub fn of(profile: &Profile) -> AdapterId {
        AdapterId {
            name: profile.name.clone(),
            api: format!("{:?}", profile.backend),
            driver: profile.driver.clone(),
        }
    }
}

/// Which of a routed-MoE layer's matmuls: they read their activations differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulRole {
    /// gate and up (one tensor of interleaved rows, or each alone): pair p reads token p / K.
    GateUp,
    /// down: pair p reads row p of `mid`.
    Down,
}

impl MatmulRole {
    /// `gate_up` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            MatmulRole::GateUp => "gate_up",
            MatmulRole::Down => "down",
        }
    }

    fn parse(name: &str) -> Result<MatmulRole, String> {
        [MatmulRole::GateUp, MatmulRole::Down]
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| format!("unknown matmul role {name:?}"))
    }
}

/// One routed-expert grouped matmul, as far as its speed goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertShape {
    /// gate/up or down.
    pub role: MatmulRole,
    /// The weights' type.
    pub weight: WeightType,
    /// The activations' type (down reads `mid`, f16 on devices with `SHADER_F16`).
    pub act: ActType,
    /// Output rows of one expert: 2F (gate and up interleaved), F, or D (down).
    pub rows: usize,
    /// Row length: D, or F (down).
    pub cols: usize,
    /// E.
    pub n_experts: usize,
    /// K.
    pub n_used: usize,
}

impl std::fmt::Display for ExpertShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}x{} {} (E {}, K {})",
            self.role.name(),
            self.weight,
            self.rows,
            self.cols,
            self.act.name(),
            self.n_experts,
            self.n_used
        )
    }
}

/// A matmul of a model and how many of its layers run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertMatmul {
    /// The matmul.
    pub shape: ExpertShape,
    /// Layers that run it.
    pub layers: usize,
}

/// The routed-expert matmuls of `config`'s model in `file`, as the backend uploads and runs
/// them (gate and up interleaved where they share type and shape), down reading `mid` of type
/// `mid` ([`crate::BackendOptions::mid`]). Read from the tensor table: no weight is touched.
pub fn expert_matmuls(
    file: &GgufFile,
    config: &ModelConfig,
    mid: ActType,
) -> moetile::Result<Vec<ExpertMatmul>> {
    let Some(moe) = &config.moe else {
        return Ok(Vec::new());
    };
    let mut out: Vec<ExpertMatmul> = Vec::new();
    let mut add = |shape: ExpertShape| match out.iter_mut().find(|m| m.shape == shape) {
        Some(m) => m.layers += 1,
        None => out.push(ExpertMatmul { shape, layers: 1 }),
    };
    for il in 0..config.n_layers {
        let tensor = |name: &str| file.tensor(&format!("blk.{il}.{name}.weight"));
        let (Some(gate), Some(up), Some(down)) = (
            tensor("ffn_gate_exps"),
            tensor("ffn_up_exps"),
            tensor("ffn_down_exps"),
        ) else {
            continue;
        };
        let weight = |t: &moetile::gguf::TensorInfo| {
            WeightType::from_ggml(t.ty).ok_or_else(|| WgpuError::UnsupportedWeight {
                tensor: t.name.clone(),
                ty: t.ty,
            })
        };
        let shape = |weight, act, rows, cols| ExpertShape {
            role: MatmulRole::GateUp,
            weight,
            act,
            rows,
            cols,
            n_experts: moe.n_experts,
            n_used: moe.n_experts_used,
        };
        let (d, f) = (config.d_model, moe.expert_ff);
        if layout::interleaves(gate.ty, &gate.dims, up.ty, &up.dims) {
            add(shape(weight(gate)?, ActType::F32, 2 * f, d));
        } else {
            add(shape(weight(gate)?, ActType::F32, f, d));
            add(shape(weight(up)?, ActType::F32, f, d));
        }
        add(ExpertShape {
            role: MatmulRole::Down,
            ..shape(weight(down)?, mid, d, f)
        });
    }
    Ok(out)
}

/// How long and at what to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneConfig {
    /// Batch lengths T: multiples of 128, the lengths at which the alignment rule runs the
    /// cap's own width whichever cap it is, so the times compare caps.
    pub tokens: Vec<usize>,
    /// Timed runs per kernel and T (after a short warm-up); the median counts.
    pub iters: usize,
    /// Experts with distinct random weights (the others repeat them): quantizing is the
    /// slow part of setting up.
    pub distinct_experts: usize,
    /// Seed of weights, activations and routing.
    pub seed: u64,
}

impl Default for TuneConfig {
    /// T = 512 and 2048 (a prefill chunk, a long prompt's), 5 runs, 2 distinct experts.
    fn default() -> TuneConfig {
        TuneConfig {
            tokens: vec![512, 2048],
            iters: 5,
            distinct_experts: 2,
            seed: 1,
        }
    }
}

/// What one tuning found on one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneOutcome {
    /// The adapter.
    pub adapter: AdapterId,
    /// The paths tested: every path the device runs.
    pub paths: Vec<Path>,
    /// The widths measured on the paths that passed, and the paths that failed.
    pub record: TuningRecord,
}

impl TuneOutcome {
    /// Merges the outcome into the record in `dir` (what it measured replaces what the record
    /// held for the same adapter, path and shape) and saves it; returns the file's path.
    pub fn save(&self, dir: &FsPath) -> Result<PathBuf, WgpuError> {
        let mut record = TuningRecord::load(dir);
        let tested: Vec<(AdapterId, Path)> = self
            .paths
            .iter()
            .map(|&p| (self.adapter.clone(), p))
            .collect();
        record.merge(&self.record, &tested);
        record.warnings.clear();
        record.save(dir)
    }
}

/// Times every tile width on every path `ctx` runs at each shape of `matmuls`, each kernel
/// checked first; see the module docs. Create `ctx` without
/// [`crate::ContextOptions::tuning_dir`], so paths recorded unusable are tested again.
pub fn tune(
    ctx: &WgpuContext,
    matmuls: &[ExpertMatmul],
    cfg: &TuneConfig,
) -> moetile::Result<TuneOutcome> {
    tune_checked(ctx, matmuls, cfg, &mut |_, checked| checked)
}

/// [`tune`], with each kernel's check passed through `verdict` (the key, and the worst error
/// as a fraction of its tolerance or why it failed), whose answer decides: an `Err` makes the
/// path unusable. Tests force failures with it.
pub fn tune_checked(
    ctx: &WgpuContext,
    matmuls: &[ExpertMatmul],
    cfg: &TuneConfig,
    verdict: &mut dyn FnMut(&MatmulKey, moetile::Result<f64>) -> moetile::Result<f64>,
) -> moetile::Result<TuneOutcome> {
    let adapter = AdapterId::of(ctx.profile());
    let paths = ctx.profile().paths();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut record = TuningRecord::default();
    let mut shapes: Vec<ExpertShape> = Vec::new();
    for m in matmuls {
        if !shapes.contains(&m.shape) {
            shapes.push(m.shape);
        }
    }
    for shape in shapes {
        let mut ms: Vec<(Path, Vec<(TileWidth, f64)>)> = Vec::new();
        let pool = ExpertPool::new(
            &mut rng,
            shape.weight,
            shape.rows,
            shape.cols,
            cfg.distinct_experts,
        )?;
        let w = pool.upload(ctx, shape.n_experts)?;
        // gate/up's pairs read token p / K. down's read row p of `mid`: T * K rows routed to one
        // expert each, the same pairs per expert and the same work as the layer's down.
        let (rows_per_token, used) = match shape.role {
            MatmulRole::GateUp => (1, shape.n_used),
            MatmulRole::Down => (shape.n_used, 1),
        };
        let layer = bench::Shape {
            name: "tune",
            hidden: shape.cols,
            expert_width: shape.rows,
            n_experts: shape.n_experts,
            n_used: used,
        };
        let max_rows = cfg.tokens.iter().copied().max().unwrap_or(1) * rows_per_token;
        // Values as the kernel sees them (rounded through f16 for f16 activations), so the
        // reference multiplies the same numbers.
        let x_host: Vec<f32> = (0..max_rows * shape.cols)
            .map(|_| {
                let v: f32 = rng.random_range(-1.0..1.0);
                match shape.act {
                    ActType::F32 => v,
                    ActType::F16 => half::f16::from_f32(v).to_f32(),
                }
            })
            .collect();
        for &t in &cfg.tokens {
            let batch = Batch::new(
                ctx,
                &mut rng,
                &layer,
                &x_host,
                t * rows_per_token,
                shape.act,
            )?;
            for &path in &paths {
                if record.unusable.iter().any(|u| u.path == path) {
                    continue;
                }
                for tile in TileWidth::ALL {
                    let key = MatmulKey {
                        weight: shape.weight,
                        act: shape.act,
                        tile,
                        path,
                    };
                    let name = KernelKey::MmId(key).to_string();
                    let groups: Vec<u32> = KernelKey::MmId(key)
                        .row_groups(shape.rows as u32)
                        .into_iter()
                        .collect();
                    let map =
                        ctx.record(&name, |rec| moe::map(rec, &batch.routing, tile, &groups))?;
                    let mm = batch.matmul(&w);
                    let run = |rec: &mut Recorder<'_>| moe::mm_id(rec, key, &map, mm);
                    let checked = bench::run_checked(ctx, &name, &batch.out, run, || {
                        pool.check(ctx, &mut rng, &name, &batch, path, 0.0)
                    });
                    if let Err(e) = verdict(&key, checked) {
                        record.unusable.push(UnusablePath {
                            adapter: adapter.clone(),
                            path,
                            kernel: name,
                            reason: e.to_string(),
                        });
                        break;
                    }
                    let (median, _) = bench::time(ctx, cfg.iters, &name, run)?;
                    let at = match ms.iter().position(|(p, _)| *p == path) {
                        Some(at) => at,
                        None => {
                            ms.push((path, Vec::new()));
                            ms.len() - 1
                        }
                    };
                    match ms[at].1.iter_mut().find(|(w, _)| *w == tile) {
                        Some((_, total)) => *total += median,
                        None => ms[at].1.push((tile, median)),
                    }
                }
            }
        }
        for (path, widths) in ms {
            // A path that failed at a later T measured only some of its widths.
            if record.unusable.iter().any(|u| u.path == path) {
                continue;
            }
            let Some(&(cap, _)) = widths.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
                continue;
            };
            record.entries.push(TunedEntry {
                adapter: adapter.clone(),
                path,
                shape,
                tokens: cfg.tokens.clone(),
                ms: widths,
                cap,
            });
        }
    }
    // A path that failed at a later shape keeps no entries from the earlier ones.
    let failed: Vec<Path> = record.unusable.iter().map(|u| u.path).collect();
    record.entries.retain(|e| !failed.contains(&e.path));
    Ok(TuneOutcome {
        adapter,
        paths,
        record,
    })
}

impl TuningRecord {
    /// The cap for a model whose routed experts run `matmuls` on `path` of `adapter`: the
    /// width with the least time over all of them (each entry's milliseconds per token timed,
    /// times the layers that run it), or `None` unless every matmul has an entry.
    pub fn tuned_cap(
        &self,
        adapter: &AdapterId,
        path: Path,
        matmuls: &[ExpertMatmul],
    ) -> Option<TileWidth> {
        if matmuls.is_empty() {
            return None;
        }
        let mut totals = TileWidth::ALL.map(|w| (w, 0.0f64));
        for m in matmuls {
            let entry = self
                .entries
                .iter()
                .find(|e| &e.adapter == adapter && e.path == path && e.shape == m.shape)?;
            let tokens: usize = entry.tokens.iter().sum();
            for (w, total) in &mut totals {
                // A width the entry lacks cannot be chosen.
                let ms = entry
                    .ms
                    .iter()
                    .find(|(ew, _)| ew == w)
                    .map_or(f64::INFINITY, |(_, ms)| *ms);
                *total += m.layers as f64 * ms / tokens as f64;
            }
        }
        totals
            .into_iter()
            .filter(|(_, t)| t.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(w, _)| w)
    }

    /// The unusable record of `path` on `adapter`, if any.
    pub fn unusable_path(&self, adapter: &AdapterId, path: Path) -> Option<&UnusablePath> {
        self.unusable
            .iter()
            .find(|u| &u.adapter == adapter && u.path == path)
    }
}
