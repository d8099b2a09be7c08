//! Tensor data of synthetic models: real quantizer outputs, drawn from pools.
//!
//! Quantizing tens of gigabytes with the bit-exact ggml quantizers would take the better part
//! of an hour, so each (type, row length) gets one pool of random rows, quantized once (at most
//! [`POOL_VALUES`] values, and never more rows than the tensors of that kind need), and every
//! tensor is filled segment by segment (256 values, or a whole row when rows are shorter) with
//! segments of randomly drawn pool rows. Every block is thus a genuine quantizer output of
//! random values, blocks repeat across the file, and rows still differ from each other, which
//! keeps routing and logits non-degenerate. Values are uniform with standard deviation
//! `1 / sqrt(row length)`, the fan-in, so activations stay of order one through the layers.
//! Vectors (norm gains, biases, scales) and expert-id tables are drawn directly.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::Result;
use crate::quant::{GgmlType, quantize};
use crate::sample::Xoshiro256;

/// Most values one pool quantizes (about 0.1 s for the slowest quantizer).
pub(crate) const POOL_VALUES: usize = 1 << 20;

/// Bytes handed to the writer at a time.
const WRITE_BATCH: usize = 1 << 20;

/// What a tensor holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Init {
    /// F32 values uniform in `mean ± spread`: norm gains near one ([`Init::NORM`]), biases,
    /// scales and sink logits where the architecture wants them.
    Vector {
        /// Centre.
        mean: f32,
        /// Half-width.
        spread: f64,
    },
    /// A weight matrix (or stack of expert matrices) from the pools; rows from `zero_from` on
    /// (within each matrix) are zero, so padding tokens of the output head get logit 0 and
    /// are never the likeliest.
    Matrix {
        /// First zero row, if any.
        zero_from: Option<usize>,
    },
    /// I32 rows of `dims[0]` distinct expert ids below `n_experts` (a hash-routing table: the
    /// experts of each token id).
    ExpertIds {
        /// E.
        n_experts: usize,
    },
}

impl Init {
    /// RMS norm gains: near one, so norms neither vanish nor repeat one value.
    pub const NORM: Init = Init::Vector {
        mean: 1.0,
        spread: 0.1,
    };
}

/// One tensor to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorPlan {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `[cols, rows, experts]`.
    pub dims: Vec<usize>,
    pub init: Init,
}

impl TensorPlan {
    fn row_len(&self) -> usize {
        self.dims[0]
    }

    fn n_rows(&self) -> usize {
        self.dims[1..].iter().product()
    }
}

/// Quantized random rows of one (type, row length).
struct Pool {
    /// Quantized rows, back to back.
    data: Vec<u8>,
    rows: usize,
    row_bytes: usize,
    seg_bytes: usize,
    /// One segment of quantized zeros.
    zero: Vec<u8>,
}

/// Every pool a file needs, built before writing starts.
pub(crate) struct Pools {
    seed: u64,
    pools: HashMap<(GgmlType, usize), Pool>,
}

/// Values per segment: 256 (a K-quant block) when rows hold whole 256s, else the whole row.
fn segment_values(row_len: usize) -> usize {
    if row_len.is_multiple_of(256) {
        256
    } else {
        row_len
    }
}

/// A generator for `label`, independent of every other label for the same seed.
fn rng_for(seed: u64, label: &str) -> Xoshiro256 {
    // FNV-1a: stable across platforms and versions, unlike `DefaultHasher`.
    let hash = label.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Xoshiro256::new(seed ^ hash)
}

/// Uniform in `[-a, a)`.
fn uniform(rng: &mut Xoshiro256, a: f64) -> f32 {
    ((rng.next_f64() * 2.0 - 1.0) * a) as f32
}

impl Pools {
    /// Quantizes the pools `tensors` draw from.
    pub fn build(seed: u64, tensors: &[TensorPlan]) -> Result<Pools> {
        let mut rows_needed: HashMap<(GgmlType, usize), usize> = HashMap::new();
        for t in tensors {
            if let Init::Matrix { .. } = t.init {
                *rows_needed.entry((t.ty, t.row_len())).or_default() += t.n_rows();
            }
        }
        let mut pools = HashMap::new();
        let mut keys: Vec<_> = rows_needed.into_iter().collect();
        keys.sort();
        for ((ty, row_len), needed) in keys {
            let rows = needed.min((POOL_VALUES / row_len).max(1));
            let mut rng = rng_for(seed, &format!("pool {ty} {row_len}"));
            let a = (3.0 / row_len as f64).sqrt();
            let values: Vec<f32> = (0..rows * row_len).map(|_| uniform(&mut rng, a)).collect();
            let mut data = Vec::new();
            quantize(ty, &values, &mut data)?;
            let mut zero = Vec::new();
            quantize(ty, &vec![0.0; segment_values(row_len)], &mut zero)?;
            let row_bytes = data.len() / rows;
            pools.insert(
                (ty, row_len),
                Pool {
                    data,
                    rows,
                    row_bytes,
                    seg_bytes: zero.len(),
                    zero,
                },
            );
        }
        Ok(Pools { seed, pools })
    }

    /// Writes the data of `t` to `out`, calling `progress` with each batch's byte count.
    pub fn write(
        &self,
        t: &TensorPlan,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> io::Result<()> {
        let mut rng = rng_for(self.seed, &t.name);
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let mut flush = |batch: &mut Vec<u8>, out: &mut dyn Write| -> io::Result<()> {
            out.write_all(batch)?;
            progress(batch.len() as u64);
            batch.clear();
            Ok(())
        };
        match t.init {
            Init::Vector { mean, spread } => {
                for _ in 0..t.dims.iter().product::<usize>() {
                    batch.extend_from_slice(&(mean + uniform(&mut rng, spread)).to_le_bytes());
                }
            }
            Init::ExpertIds { n_experts } => {
                // A partial Fisher-Yates shuffle per row: distinct ids, uniformly chosen.
                let mut ids: Vec<i32> = (0..n_experts as i32).collect();
                for _ in 0..t.n_rows() {
                    for k in 0..t.row_len() {
                        let j = k + (rng.next_u64() % (n_experts - k) as u64) as usize;
                        ids.swap(k, j);
                        batch.extend_from_slice(&ids[k].to_le_bytes());
                    }
                    if batch.len() >= WRITE_BATCH {
                        flush(&mut batch, out)?;
                    }
                }
            }
            Init::Matrix { zero_from } => {
                let pool = self.pools.get(&(t.ty, t.row_len())).ok_or_else(|| {
                    io::Error::other(format!("no pool for {} rows of {}", t.ty, t.row_len()))
                })?;
                let rows_per_matrix = t.dims.get(1).copied().unwrap_or(1);
                let segs = pool.row_bytes / pool.seg_bytes;
                // The first segment walks the pool from a random start, so a tensor repeats no
                // row until it has more rows than the pool; the others are drawn at random.
                let start = rng.next_u64() as usize % pool.rows;
                for row in 0..t.n_rows() {
                    if zero_from.is_some_and(|z| row % rows_per_matrix >= z) {
                        (0..segs).for_each(|_| batch.extend_from_slice(&pool.zero));
                    } else {
                        for s in 0..segs {
                            let r = match s {
                                0 => (start + row) % pool.rows,
                                _ => (rng.next_u64() % pool.rows as u64) as usize,
                            };
                            let at = r * pool.row_bytes + s * pool.seg_bytes;
                            batch.extend_from_slice(&pool.data[at..at + pool.seg_bytes]);
                        }
                    }
                    if batch.len() >= WRITE_BATCH {
                        flush(&mut batch, out)?;
                    }
                }
            }
        }
        flush(&mut batch, out)
    }
}
