//! Shared helpers of moetile's cross-crate integration tests (in `tests/tests/`): fixture paths
//! and golden logit files.
//!
//! The fixtures are tiny MoE models made by the oracle tools, each with the logits of an exact
//! float64 reference and of llama.cpp on its prompt:
//!
//! ```
//! use moetile_tests::{golden::Golden, model_fixture};
//!
//! let (model, reference, _llama) = model_fixture("qwen2moe-small-f32");
//! assert!(model.exists());
//! let golden = Golden::read(&reference)?;
//! assert_eq!(golden.logits.len(), golden.tokens.len() * golden.n_vocab);
//! # Ok::<(), anyhow::Error>(())
//! ```

#![deny(missing_docs)]

pub mod golden;

use std::path::PathBuf;

/// `tests/fixtures/` of this repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The whole-model fixture `NAME.gguf` and its golden files `NAME.ref.golden` (exact float64
/// reference) and `NAME.llama.golden` (llama.cpp's logits).
pub fn model_fixture(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = fixtures().join("models");
    (
        dir.join(format!("{name}.gguf")),
        dir.join(format!("{name}.ref.golden")),
        dir.join(format!("{name}.llama.golden")),
    )
}
