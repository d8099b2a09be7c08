//! Runtime settings that are not part of the model: context size, prefill chunking, tile policy.

use crate::Result;
use crate::tile::{self, TilePolicy, TileWidth};

/// How the tile policy is chosen; the cap is resolved separately (config, then environment).
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

/// Settings a user or embedder chooses per model instance.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Context length in tokens; `None` uses the model's trained context, capped at 4096.
    pub ctx: Option<usize>,
    /// Most tokens per prefill chunk.
    pub chunk: usize,
    /// Tile cap; `None` falls back to `MOETILE_TILE_MAX`, then 128.
    pub tile_max: Option<TileWidth>,
    /// Tile policy.
    pub tile_policy: TilePolicyKind,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            ctx: None,
            chunk: 512,
            tile_max: None,
            tile_policy: TilePolicyKind::default(),
        }
    }
}

impl RuntimeConfig {
    /// The tile policy with its cap resolved (config, then `MOETILE_TILE_MAX`, then 128).
    pub fn resolve_tile_policy(&self) -> Result<TilePolicy> {
        let cap = tile::resolve_cap_from_env(self.tile_max)?;
        Ok(match self.tile_policy {
            TilePolicyKind::Alignment => TilePolicy::Alignment { cap },
            TilePolicyKind::LoadAware => TilePolicy::LoadAware { cap },
            TilePolicyKind::Fixed(w) => TilePolicy::Fixed(w),
        })
    }
}
