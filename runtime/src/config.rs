//! Runtime settings that are not part of the model: context size, prefill chunking, tile policy.
//!
//! Settings are passed, never discovered: nothing in the library reads the environment except
//! [`RuntimeConfig::from_env`], which the CLI calls and embedders may call.

use crate::Result;
use crate::error::Error;
use crate::model::ModelConfig;
use crate::tile::{TILE_MAX_ENV, TileCap, TilePolicy, TileWidth};

/// The longest context a session gets when the config does not set one: a model trained on
/// more would otherwise reserve a KV cache for its whole trained context.
pub const DEFAULT_CTX_MAX: usize = 4096;

/// How the tile policy is chosen; the cap is a setting of its own ([`RuntimeConfig::tile_max`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TilePolicyKind {
    /// [`TilePolicy::Alignment`], the product's default.
    #[default]
    Alignment,
    /// [`TilePolicy::LoadAware`].
    LoadAware,
    /// [`TilePolicy::Fixed`].
    Fixed(TileWidth),
}

impl TilePolicyKind {
    /// Parses `alignment`, `load-aware` or `fixed:N`.
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim() {
            "alignment" => Ok(TilePolicyKind::Alignment),
            "load-aware" => Ok(TilePolicyKind::LoadAware),
            other => match other.strip_prefix("fixed:") {
                Some(w) => Ok(TilePolicyKind::Fixed(crate::tile::parse_width(
                    "fixed tile width",
                    w,
                )?)),
                None => Err(Error::InvalidSetting {
                    name: "tile policy".to_string(),
                    value: value.to_string(),
                    expected: "alignment, load-aware or fixed:32|64|128".to_string(),
                }),
            },
        }
    }
}

/// Settings a user or embedder chooses per model instance.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Context length in tokens; `None` uses the model's trained context, capped at
    /// [`DEFAULT_CTX_MAX`].
    pub ctx: Option<usize>,
    /// Most tokens per prefill chunk.
    pub chunk: usize,
    /// Tile cap set by the caller (the CLI's `--tile-max`); it goes over every other source
    /// (see [`RuntimeConfig::tile_cap`]).
    pub tile_max: Option<TileWidth>,
    /// Tile cap from `MOETILE_TILE_MAX` ([`RuntimeConfig::from_env`] sets it): below
    /// [`RuntimeConfig::tile_max`], above [`RuntimeConfig::tuned_tile_max`].
    pub tile_max_env: Option<TileWidth>,
    /// Tile cap measured for the model on the device (`moetile_wgpu::tune`), used when
    /// neither the caller nor the environment sets one; `None` of all three is 128.
    pub tuned_tile_max: Option<TileWidth>,
    /// Tile policy.
    pub tile_policy: TilePolicyKind,
    /// deepseek4: round attention keys (FP8) and indexer heads (FP4) as the model was
    /// trained, as the original engine does (the default); off computes llama.cpp's graph.
    /// Other architectures ignore it.
    pub qat_sim: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            ctx: None,
            chunk: 512,
            tile_max: None,
            tile_max_env: None,
            tuned_tile_max: None,
            tile_policy: TilePolicyKind::default(),
            qat_sim: true,
        }
    }
}

impl RuntimeConfig {
    /// The defaults with the tile cap `MOETILE_TILE_MAX` sets (32, 64 or 128), if it is set, in
    /// [`RuntimeConfig::tile_max_env`]. An invalid value is an error naming the allowed ones,
    /// never silently ignored. Settings given explicitly (a command-line flag) go over it:
    /// set the fields they set ([`RuntimeConfig::tile_max`] for the cap).
    pub fn from_env() -> Result<RuntimeConfig> {
        Self::with_tile_max_env(std::env::var(TILE_MAX_ENV).ok().as_deref())
    }

    /// [`RuntimeConfig::from_env`] with `value` as `MOETILE_TILE_MAX`'s value.
    fn with_tile_max_env(value: Option<&str>) -> Result<RuntimeConfig> {
        Ok(RuntimeConfig {
            tile_max_env: value
                .map(|v| crate::tile::parse_width(TILE_MAX_ENV, v))
                .transpose()?,
            ..RuntimeConfig::default()
        })
    }

    /// The context length a session of `model` gets: [`RuntimeConfig::ctx`], else the trained
    /// one capped at [`DEFAULT_CTX_MAX`].
    pub fn n_ctx(&self, model: &ModelConfig) -> usize {
        self.ctx.unwrap_or(model.n_ctx_train.min(DEFAULT_CTX_MAX))
    }

    /// The tile cap and its source: [`RuntimeConfig::tile_max`], else
    /// [`RuntimeConfig::tile_max_env`], else [`RuntimeConfig::tuned_tile_max`], else 128.
    pub fn tile_cap(&self) -> TileCap {
        TileCap::resolve(self.tile_max, self.tile_max_env, self.tuned_tile_max)
    }

    /// The tile policy with its cap ([`RuntimeConfig::tile_cap`]).
    pub fn resolve_tile_policy(&self) -> TilePolicy {
        let cap = self.tile_cap().width;
        match self.tile_policy {
            TilePolicyKind::Alignment => TilePolicy::Alignment { cap },
            TilePolicyKind::LoadAware => TilePolicy::LoadAware { cap },
            TilePolicyKind::Fixed(w) => TilePolicy::Fixed(w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TileWidth::*;

    #[test]
    fn tile_cap_comes_from_the_config_then_the_environment_then_the_tuned_cap_then_128() {
        use crate::tile::TileCapSource::*;
        let cap = |config, env: Option<&str>, tuned| {
            let c = RuntimeConfig {
                tile_max: config,
                tuned_tile_max: tuned,
                ..RuntimeConfig::with_tile_max_env(env).unwrap()
            };
            (c.tile_cap().width, c.tile_cap().source)
        };
        assert_eq!(cap(Some(T64), Some("32"), Some(T128)), (T64, Config));
        assert_eq!(cap(None, Some("32"), Some(T64)), (T32, Env));
        assert_eq!(cap(None, None, Some(T64)), (T64, Tuned));
        assert_eq!(cap(None, None, None), (T128, Default));
        assert_eq!(cap(Some(T32), None, None), (T32, Config));
        let tuned = RuntimeConfig {
            tuned_tile_max: Some(T32),
            ..RuntimeConfig::default()
        };
        assert_eq!(
            tuned.resolve_tile_policy(),
            TilePolicy::Alignment { cap: T32 }
        );
    }

    #[test]
    fn tile_cap_comes_from_the_config_else_the_environment_else_128() {
        let cap = |env| {
            RuntimeConfig::with_tile_max_env(env)
                .unwrap()
                .resolve_tile_policy()
        };
        assert_eq!(cap(None), TilePolicy::Alignment { cap: T128 });
        assert_eq!(cap(Some("64")), TilePolicy::Alignment { cap: T64 });
        assert_eq!(cap(Some(" 32 ")), TilePolicy::Alignment { cap: T32 });
        let config = RuntimeConfig {
            tile_max: Some(T64),
            tile_policy: TilePolicyKind::LoadAware,
            ..RuntimeConfig::with_tile_max_env(Some("32")).unwrap()
        };
        assert_eq!(
            config.resolve_tile_policy(),
            TilePolicy::LoadAware { cap: T64 }
        );
    }

    #[test]
    fn invalid_environment_cap_names_the_variable_and_the_allowed_values() {
        for bad in ["0", "16", "96", "256", "abc", ""] {
            let err = RuntimeConfig::with_tile_max_env(Some(bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains(TILE_MAX_ENV), "{err}");
            assert!(err.contains("32, 64 or 128"), "{err}");
        }
    }

    #[test]
    fn policy_parses_and_rejects() {
        assert_eq!(
            TilePolicyKind::parse("alignment").unwrap(),
            TilePolicyKind::Alignment
        );
        assert_eq!(
            TilePolicyKind::parse(" load-aware").unwrap(),
            TilePolicyKind::LoadAware
        );
        assert_eq!(
            TilePolicyKind::parse("fixed:64").unwrap(),
            TilePolicyKind::Fixed(T64)
        );
        assert!(
            TilePolicyKind::parse("fixed:48")
                .unwrap_err()
                .to_string()
                .contains("32, 64 or 128")
        );
        assert!(
            TilePolicyKind::parse("widest")
                .unwrap_err()
                .to_string()
                .contains("alignment")
        );
    }
}
