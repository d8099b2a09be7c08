//! Token-tile width selection for the routed-MoE grouped matmul.
//!
//! The width is a build-time specialization of the GPU kernels (32, 64 or 128 tokens per
//! workgroup); this module decides which one a batch runs with. The product's stated rule is
//! [`TilePolicy::Alignment`]: the widest width that divides the batch length, capped.
//! [`TilePolicy::Fixed`] and [`TilePolicy::LoadAware`] exist for measurement.

use crate::{Error, Result};

/// Environment variable that caps the tile width, read by
/// [`RuntimeConfig::from_env`](crate::RuntimeConfig::from_env).
pub const TILE_MAX_ENV: &str = "MOETILE_TILE_MAX";

pub use moetile_codegen::TileWidth;

/// Parses a user-given tile width ("32", "64", "128"); `name` says where it came from.
pub fn parse_width(name: &str, value: &str) -> Result<TileWidth> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(TileWidth::from_tokens)
        .ok_or_else(|| Error::InvalidSetting {
            name: name.to_string(),
            value: value.to_string(),
            expected: "a tile width of 32, 64 or 128".to_string(),
        })
}

/// Where a tile cap came from, strongest first: a setting the caller passed (the CLI's
/// `--tile-max`), `MOETILE_TILE_MAX`, the cap `moetile tune` measured for the model on the
/// device, else the built-in 128. Reports name it, so a user sees why a cap is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileCapSource {
    /// [`RuntimeConfig::tile_max`](crate::RuntimeConfig::tile_max).
    Config,
    /// `MOETILE_TILE_MAX`, through [`RuntimeConfig::tile_max_env`](crate::RuntimeConfig::tile_max_env).
    Env,
    /// [`RuntimeConfig::tuned_tile_max`](crate::RuntimeConfig::tuned_tile_max).
    Tuned,
    /// Nothing set one: 128.
    Default,
}

impl std::fmt::Display for TileCapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TileCapSource::Config => "config",
            TileCapSource::Env => TILE_MAX_ENV,
            TileCapSource::Tuned => "tuned",
            TileCapSource::Default => "default",
        })
    }
}

/// A tile cap and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileCap {
    /// The widest width allowed.
    pub width: TileWidth,
    /// Where it came from.
    pub source: TileCapSource,
}

impl TileCap {
    /// The first cap given, in the order of precedence: `config`, `env`, `tuned`, else 128.
    pub fn resolve(
        config: Option<TileWidth>,
        env: Option<TileWidth>,
        tuned: Option<TileWidth>,
    ) -> TileCap {
        [
            (config, TileCapSource::Config),
            (env, TileCapSource::Env),
            (tuned, TileCapSource::Tuned),
        ]
        .into_iter()
        .find_map(|(width, source)| width.map(|width| TileCap { width, source }))
        .unwrap_or(TileCap {
            width: TileWidth::T128,
            source: TileCapSource::Default,
        })
    }
}

/// The shape of one routed-MoE batch, as far as tile choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeBatch {
    /// Tokens in the batch (the prefill chunk length): T.
    pub tokens: usize,
    /// Experts in the layer: E.
    pub n_experts: usize,
    /// Experts each token is routed to: K.
    pub n_experts_used: usize,
}

impl MoeBatch {
    /// Mean tokens per expert, rounded up: ceil(T * K / E).
    pub fn mean_tokens_per_expert(&self) -> usize {
        (self.tokens * self.n_experts_used).div_ceil(self.n_experts.max(1))
    }
}

/// How the token-tile width is chosen for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePolicy {
    /// 128 if T % 128 == 0 and cap >= 128; else 64 if T % 64 == 0 and cap >= 64; else 32.
    Alignment {
        /// The widest width allowed.
        cap: TileWidth,
    },
    /// Always this width.
    Fixed(TileWidth),
    /// The narrowest width that holds the mean tokens per expert, ceil(T*K/E), capped: few
    /// half-empty tiles when experts are lightly loaded, wide tiles when they are heavily loaded.
    LoadAware {
        /// The widest width allowed.
        cap: TileWidth,
    },
}

impl Default for TilePolicy {
    fn default() -> Self {
        TilePolicy::Alignment {
            cap: TileWidth::T128,
        }
    }
}

impl TilePolicy {
    /// The tile width for `batch`.
    pub fn choose(&self, batch: MoeBatch) -> TileWidth {
        match *self {
            TilePolicy::Alignment { cap } => TileWidth::ALL
                .into_iter()
                .rev()
                .find(|w| *w <= cap && batch.tokens.is_multiple_of(w.tokens()))
                .unwrap_or(TileWidth::T32),
            TilePolicy::Fixed(w) => w,
            TilePolicy::LoadAware { cap } => {
                let mean = batch.mean_tokens_per_expert();
                TileWidth::ALL
                    .into_iter()
                    .find(|w| w.tokens() >= mean)
                    .unwrap_or(TileWidth::T128)
                    .min(cap)
            }
        }
    }
}

impl std::fmt::Display for TilePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TilePolicy::Alignment { cap } => write!(f, "alignment(cap {cap})"),
            TilePolicy::Fixed(w) => write!(f, "fixed:{w}"),
            TilePolicy::LoadAware { cap } => write!(f, "load-aware(cap {cap})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TileWidth::*;

    fn batch(tokens: usize) -> MoeBatch {
        MoeBatch {
            tokens,
            n_experts: 128,
            n_experts_used: 8,
        }
    }

    #[test]
    fn alignment_picks_widest_dividing_width_under_cap() {
        let p = |cap| TilePolicy::Alignment { cap };
        let cases = [
            (2048, T128, T128),
            (2048, T64, T64),
            (2048, T32, T32),
            (192, T128, T64),
            (64, T128, T64),
            (96, T128, T32),
            (100, T128, T32),
            (1, T128, T32),
            (128, T64, T64),
            (384, T128, T128),
            (320, T128, T64),
        ];
        for (tokens, cap, want) in cases {
            assert_eq!(p(cap).choose(batch(tokens)), want, "T={tokens} cap={cap}");
        }
    }

    #[test]
    fn fixed_ignores_batch() {
        for w in TileWidth::ALL {
            assert_eq!(TilePolicy::Fixed(w).choose(batch(7)), w);
            assert_eq!(TilePolicy::Fixed(w).choose(batch(4096)), w);
        }
    }

    #[test]
    fn load_aware_follows_mean_tokens_per_expert() {
        let p = TilePolicy::LoadAware { cap: T128 };
        // mean = ceil(T * 8 / 128) = ceil(T / 16)
        assert_eq!(p.choose(batch(512)), T32); // 32
        assert_eq!(p.choose(batch(513)), T64); // 33
        assert_eq!(p.choose(batch(1024)), T64); // 64
        assert_eq!(p.choose(batch(2048)), T128); // 128
        assert_eq!(p.choose(batch(65536)), T128);
        assert_eq!(TilePolicy::LoadAware { cap: T64 }.choose(batch(65536)), T64);
    }
}
