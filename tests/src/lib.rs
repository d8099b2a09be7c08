//! Shared helpers of moetile's cross-crate integration tests (in `tests/tests/`): fixture paths
//! and golden logit files.

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
