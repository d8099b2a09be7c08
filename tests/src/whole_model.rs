//! A fixture model run as the whole-model tests compare it with llama.cpp's goldens, on any
//! backend: every position's logits of a prompt fed in chunks, and greedy generation after a
//! prompt, one token per call (as llama.cpp's loop over `llama_decode` makes its goldens).

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Backend, Logits, Model};
use moetile::session::Session;

/// A session of the default context whose prefill runs in chunks of `chunk` tokens.
pub fn session<B: Backend>(model: &Model<B>, backend: &mut B, chunk: usize) -> Session<B> {
    let config = RuntimeConfig {
        chunk,
        ..RuntimeConfig::default()
    };
    Session::new(model, backend, &config).unwrap()
}

/// Every position's logits `(T, vocab)` of `tokens` on the model of `file`, prefilled in chunks
/// of `chunk`.
pub fn prefill<B: Backend>(
    backend: &mut B,
    file: &GgufFile,
    tokens: &[u32],
    chunk: usize,
) -> Vec<f32> {
    let model = Model::load(file, backend, &mut |_| {}).unwrap();
    let mut s = session(&model, backend, chunk);
    s.prefill(&model, backend, tokens, Logits::All).unwrap()
}

/// The first index of the largest value, as llama.cpp's greedy loop picks it.
pub fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as u32
}

/// `n` greedy ids after `prompt` (prefilled in one call, then one token per call) on the model
/// of `file`, and the logits that chose each, `(n, vocab)`.
pub fn greedy<B: Backend>(
    backend: &mut B,
    file: &GgufFile,
    prompt: &[u32],
    n: usize,
) -> (Vec<u32>, Vec<f32>) {
    let model = Model::load(file, backend, &mut |_| {}).unwrap();
    let mut s = session(&model, backend, 512);
    let mut logits = s.prefill(&model, backend, prompt, Logits::Last).unwrap();
    let (mut ids, mut rows) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let id = argmax(&logits);
        ids.push(id);
        rows.extend_from_slice(&logits);
        logits = s.prefill(&model, backend, &[id], Logits::Last).unwrap();
    }
    (ids, rows)
}
