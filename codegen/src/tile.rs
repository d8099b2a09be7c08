//! [`TileWidth`]: the token-tile widths the grouped matmuls are specialized for. It lives here,
//! with the kernels it sizes, so the generator depends on nothing else in the repository; the
//! runtime re-exports it as `moetile::tile::TileWidth` and chooses among the widths.

/// A token-tile width: how many tokens of one expert a matmul workgroup computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileWidth {
    /// 32 tokens per tile.
    T32,
    /// 64 tokens per tile.
    T64,
    /// 128 tokens per tile.
    T128,
}

impl TileWidth {
    /// Every width, narrowest first.
    pub const ALL: [TileWidth; 3] = [TileWidth::T32, TileWidth::T64, TileWidth::T128];

    /// Tokens per tile.
    pub fn tokens(self) -> usize {
        match self {
            TileWidth::T32 => 32,
            TileWidth::T64 => 64,
            TileWidth::T128 => 128,
        }
    }

    /// The width of `tokens`, if it is one of 32, 64 or 128.
    pub fn from_tokens(tokens: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.tokens() == tokens)
    }
}

impl std::fmt::Display for TileWidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.tokens())
    }
}
