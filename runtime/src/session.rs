//! Sessions: chunked prefill, token-by-token decode, the context limit and KV-cache reuse across
//! the turns of a chat.
//!
//! A session owns the KV cache and the list of tokens it holds; the model and backend are
//! borrowed per call, so one loaded model can serve several sessions.

use crate::config::RuntimeConfig;
use crate::model::{Backend, Logits, Model};
use crate::tile::{TilePolicy, TileWidth};
use crate::{Error, Result};

/// The state of one conversation or completion.
pub struct Session<B: Backend> {
    kv: B::KvCache,
    n_ctx: usize,
    chunk: usize,
    policy: TilePolicy,
    tokens: Vec<u32>,
    tiles_used: Vec<TileWidth>,
    /// Whether the cache can go back to any earlier position ([`crate::model::ModelConfig::cache_rewinds`]).
    rewinds: bool,
}

impl<B: Backend> Session<B> {
    /// A session with an empty cache; `config` sets the context, chunk size and tile policy.
    pub fn new(model: &Model<B>, backend: &mut B, config: &RuntimeConfig) -> Result<Self> {
        let n_ctx = Self::checked_ctx(model, config)?;
        let kv = model.kv_cache(backend, n_ctx, config)?;
        Ok(Self::with_cache(model, config, n_ctx, kv))
    }

    /// `n` sessions like [`Session::new`]'s meant to be decoded together
    /// ([`Session::decode_batch`]), their caches from [`Model::kv_caches`] (on the wgpu
    /// backend, regions of one arena, so their attention runs in one set of dispatches).
    pub fn group(
        model: &Model<B>,
        backend: &mut B,
        config: &RuntimeConfig,
        n: usize,
    ) -> Result<Vec<Self>> {
        let n_ctx = Self::checked_ctx(model, config)?;
        let caches = model.kv_caches(backend, n, n_ctx, config)?;
        Ok(caches
            .into_iter()
            .map(|kv| Self::with_cache(model, config, n_ctx, kv))
            .collect())
    }

    /// The context `config` gives `model`, refused when it or the chunk is 0.
    fn checked_ctx(model: &Model<B>, config: &RuntimeConfig) -> Result<usize> {
        let n_ctx = config.n_ctx(&model.config);
        if n_ctx == 0 || config.chunk == 0 {
            return Err(Error::InvalidSetting {
                name: "context/chunk".into(),
                value: format!("ctx {n_ctx}, chunk {}", config.chunk),
                expected: "both at least 1".into(),
            });
        }
        Ok(n_ctx)
    }

    /// An empty session over `kv`, a cache of `n_ctx` positions.
    fn with_cache(model: &Model<B>, config: &RuntimeConfig, n_ctx: usize, kv: B::KvCache) -> Self {
        Session {
            kv,
            n_ctx,
            chunk: config.chunk,
            policy: config.resolve_tile_policy(),
            tokens: Vec::new(),
            tiles_used: Vec::new(),
            rewinds: model.config.cache_rewinds(),
        }
    }

    /// The context length.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Most tokens per prefill chunk.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Tokens currently in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The tile policy in use.
    pub fn tile_policy(&self) -> TilePolicy {
        self.policy
    }

    /// Distinct tile widths the routed-MoE matmuls have run with so far.
    pub fn tiles_used(&self) -> &[TileWidth] {
        &self.tiles_used
    }

    /// Forgets everything in the cache.
    pub fn reset(&mut self) {
        self.tokens.clear();
    }

    /// Keeps only the first `n` cached tokens (positions past `n` are overwritten later). A
    /// cache that cannot rewind ([`crate::model::ModelConfig::cache_rewinds`]) keeps all it
    /// holds (`n` at least that) or nothing.
    pub fn truncate(&mut self, n: usize) {
        if self.rewinds || n >= self.tokens.len() {
            self.tokens.truncate(n);
        } else {
            self.tokens.clear();
        }
    }

    /// Runs `tokens` after the cached ones in chunks of at most `chunk`; returns the logits of
    /// the last token (`Logits::Last`) or of every token (`Logits::All`), row-major. An empty
    /// `tokens` is an error: there is nothing to predict from.
    pub fn prefill(
        &mut self,
        model: &Model<B>,
        backend: &mut B,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<Vec<f32>> {
        self.check_room(self.tokens.len(), tokens.len())?;
        let mut out = Vec::new();
        for chunk in tokens.chunks(self.chunk) {
            let pos0 = self.tokens.len();
            self.note_tile(model, backend, chunk.len());
            let y = model.forward(backend, &mut self.kv, chunk, pos0, &self.policy, logits)?;
            self.tokens.extend_from_slice(chunk);
            let values = backend.read(&y)?;
            match logits {
                Logits::All => out.extend(values),
                Logits::Last => out = values,
            }
        }
        Ok(out)
    }

    /// Records the tile width a batch of `tokens` runs the expert matmuls with.
    fn note_tile(&mut self, model: &Model<B>, backend: &B, tokens: usize) {
        if tokens > backend.mat_vec_max_tokens()
            && let Some(w) = model.tile_for(tokens, &self.policy)
            && !self.tiles_used.contains(&w)
        {
            self.tiles_used.push(w);
        }
    }

    /// Decodes `tokens[i]` after what `sessions[i]` holds, all in one forward pass (see
    /// [`Backend::batches_sequences`]: where it is false, a pass per session is faster);
    /// returns each session's logits. The tile policy is the first session's. Fails, with
    /// no session changed, unless there is a token per session and room for it in each.
    pub fn decode_batch(
        model: &Model<B>,
        backend: &mut B,
        sessions: &mut [&mut Session<B>],
        tokens: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        if sessions.len() != tokens.len() {
            return Err(Error::InvalidSetting {
                name: "decode batch".into(),
                value: format!("{} sessions, {} tokens", sessions.len(), tokens.len()),
                expected: "one token per session".into(),
            });
        }
        let Some(first) = sessions.first() else {
            return Ok(Vec::new());
        };
        let policy = first.policy;
        for session in sessions.iter() {
            session.check_room(session.tokens.len(), 1)?;
        }
        let positions: Vec<usize> = sessions.iter().map(|s| s.tokens.len()).collect();
        let mut kvs: Vec<&mut B::KvCache> = sessions.iter_mut().map(|s| &mut s.kv).collect();
        let y = model.forward_batch(backend, &mut kvs, &positions, tokens, &policy)?;
        let logits = backend.read(&y)?;
        let n_vocab = logits.len() / tokens.len();
        for (session, &token) in sessions.iter_mut().zip(tokens) {
            session.note_tile(model, backend, tokens.len());
            session.tokens.push(token);
        }
        Ok(logits.chunks(n_vocab).map(<[f32]>::to_vec).collect())
    }

    /// Fails unless `tokens` new tokens, the first at position `start`, are some and fit the
    /// context: the check of prefill and of a generation's whole prompt.
    pub(crate) fn check_room(&self, start: usize, tokens: usize) -> Result<()> {
        if tokens == 0 {
            return Err(Error::InvalidSetting {
                name: "prompt".into(),
                value: String::new(),
                expected: "at least one token".into(),
            });
        }
        let needed = start + tokens;
        if needed > self.n_ctx {
            return Err(Error::ContextFull {
                n_ctx: self.n_ctx,
                needed,
            });
        }
        Ok(())
    }

    /// Runs one token; returns its logits.
    pub fn decode(&mut self, model: &Model<B>, backend: &mut B, token: u32) -> Result<Vec<f32>> {
        self.prefill(model, backend, &[token], Logits::Last)
    }

    /// Prefills `prompt`, reusing the longest cached prefix it shares with what the cache
    /// holds (a chat resends the whole conversation each turn). At least the last prompt token
    /// is always recomputed, since its logits are needed.
    pub fn prefill_reusing(
        &mut self,
        model: &Model<B>,
        backend: &mut B,
        prompt: &[u32],
    ) -> Result<Vec<f32>> {
        let keep = self.reusable_prefix(prompt);
        self.truncate(keep);
        self.prefill(model, backend, &prompt[keep..], Logits::Last)
    }

    /// How many leading tokens of `prompt` the cache already holds and may keep: the shared
    /// prefix, less the last prompt token (whose logits are always needed); for a cache that
    /// cannot rewind, all it holds or nothing.
    pub fn reusable_prefix(&self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = common.min(prompt.len().saturating_sub(1));
        if self.rewinds || keep == self.tokens.len() {
            keep
        } else {
            0
        }
    }
}
