//! deepseek4's attention kernels (`moetile_wgpu::deepseek4`: `ds4_rope`, `ds4_qat`,
//! `ds4_index_score` + `ds4_index_pick`, `ds4_attend`) each against its CPU reference on fresh
//! random inputs, outputs poisoned with NaN first (the in-place kernels' untouched values
//! must come back as they were). The references are the CPU reference model's own functions
//! where it has them as such (`moetile_cpu::deepseek4::rope::Rope`, `qat`), else the plain f64
//! loop of the formula, written here to be checked by eye.
//!
//! Tolerances:
//! - ds4_rope: the (cos, sin) table is f64 rounded once to f32, then two f32 products and a
//!   sum: within 4 half-ulps of |x0| + |x1| (bound: 2 ulps); the other values untouched.
//! - ds4_qat: exact. FP8 keys: dividing and multiplying by a power of two and rounding to the
//!   format are exact in f32. Hadamard + FP4: on integer heads of 64 and 256 values the
//!   butterfly's sums and its factor (1/8, 1/16) are exact in f32 too, so every rounding sees
//!   the reference's input.
//! - ds4_index_score: f32 sums of relu(q . k) w over <= 8 heads of <= 128 products of
//!   values <= 1: 1e-5 absolute (scores of magnitude ~1).
//! - ds4_index_pick: the picks exactly, ranked on the kernel's own scores (read back), so f32
//!   rounding cannot move a row across the k-th score; repeated keys make exact ties, which
//!   must go to the earlier row.
//! - ds4_attend: f32 scores and softmax over <= 160 keys of |q . k| <= ~3: 2e-6 absolute
//!   (outputs of magnitude <= 1; the existing attention kernels' f32 budget is 1e-5).

mod common;

use common::{rng, shared_ctx, uniform};
use moetile_cpu::deepseek4::qat::{hadamard, round_fp4_blocks, round_fp8_blocks};
use moetile_cpu::deepseek4::rope::Rope;
use moetile_wgpu::deepseek4::{
    self as ds4, AttendKeys, CompressedRows, IndexInputs, Picks, RopeAt, Rounding,
};
use moetile_wgpu::{ActType, GpuMatrix, WgpuContext};
use rand::Rng;
use rand::rngs::StdRng;

fn matrix(ctx: &WgpuContext, rows: usize, cols: usize, data: &[f32]) -> GpuMatrix {
    ctx.buffers()
        .matrix_from_host(rows, cols, ActType::F32, data)
        .unwrap()
}

fn poisoned(ctx: &WgpuContext, rows: usize, cols: usize) -> GpuMatrix {
    ctx.buffers()
        .matrix_filled(rows, cols, ActType::F32, f32::NAN)
        .unwrap()
}

/// `|got - want| <= bound(i)` everywhere, NaN failing; prints the first misses.
fn check(label: &str, got: &[f32], want: &[f64], bound: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{label}: lengths");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].is_nan() || (got[i] as f64 - want[i]).abs() > bound(i))
        .collect();
    for &i in bad.iter().take(8) {
        eprintln!("{label}: [{i}] got {}, want {}", got[i], want[i]);
    }
    assert!(
        bad.is_empty(),
        "{label}: {} of {} wrong",
        bad.len(),
        got.len()
    );
}

/// Heads' tails rotated to `pos0 + row * step` and back, plain and YaRN-scaled, at the tiny
/// fixture's widths and Flash's, against the reference's `Rope`.
#[test]
fn ds4_rope_rotates_tails_like_the_reference() {
    let Some(ctx) = shared_ctx() else {
        return;
    };
    let mut rng = rng("ds4_rope_rotates_tails_like_the_reference");
    for (rows, heads, hd, n_rot, pos0, step, yarn) in [
        (7, 4, 32, 16, 0, 1, false),
        (5, 4, 32, 16, 123, 1, true),
        (3, 1, 64, 64, 8, 4, true),
        (2, 1, 512, 64, 0, 128, true),
        (4, 3, 512, 64, 1000, 1, false),
    ] {
        let (base, scale, orig) = if yarn {
            (160000.0, 0.25, Some(128))
        } else {
            (10000.0, 1.0, None)
        };
        let freqs = ds4::rope_freqs(n_rot, base, scale, orig);
        let last = pos0 + (rows - 1) * step;
        let table: Vec<f32> = ds4::rope_table(&freqs, last + 1)
            .into_iter()
            .flatten()
            .collect();
        let angles = matrix(ctx, table.len(), 1, &table);
        let reference = Rope::scaled(n_rot, base, scale, orig);
        let x = uniform(&mut rng, rows * heads * hd, 2.0);
        for inverse in [false, true] {
            let m = matrix(ctx, rows, heads * hd, &x);
            let at = RopeAt {
                pos0,
                step,
                head_dim: hd,
                n_rot,
                inverse,
            };
            ctx.record("ds4_rope", |rec| ds4::rope(rec, angles.buffer(), &m, at))
                .unwrap();
            let got = ctx.read_matrix(&m).unwrap();
            let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            for (i, head) in want.chunks_exact_mut(hd).enumerate() {
                let pos = pos0 + i / heads * step;
                match inverse {
                    false => reference.rotate(head, pos),
                    true => reference.unrotate(head, pos),
                }
            }
            let label = format!("ds4_rope {rows}x{heads}x{hd} rot {n_rot} at {pos0}+{step}r");
            // A rotated value is off by a few roundings of its pair's magnitude; the rest is
            // untouched.
            check(&label, &got, &want, |i| {
                let o = i % hd;
                if o < hd - n_rot {
                    return 0.0;
                }
                let first = i - (o - (hd - n_rot)) % 2;
                let mag = (x[first].abs() + x[first + 1].abs()) as f64;
                2.0 * mag * f64::from(f32::EPSILON)
            });
        }
    }
}

/// Values spread over many binades, both signs, some zeros.
fn spread(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..10) {
            0 => 0.0,
            _ => {
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                sign * 2f32.powf(rng.random_range(-12.0..10.0))
            }
        })
        .collect()
}

/// FP8 keys (the non-rotated values, in blocks of 64 and a shorter last one) and Hadamard +
/// FP4 indexer heads, against the reference's roundings: exactly (see the module docs).
#[test]
fn ds4_qat_rounds_like_the_reference() {
    let Some(ctx) = shared_ctx() else {
        return;
    };
    let mut rng = rng("ds4_qat_rounds_like_the_reference");
    for (rows, hd, rounding) in [
        (9, 32, Rounding::KeyFp8 { n_rot: 16 }),
        (3, 512, Rounding::KeyFp8 { n_rot: 64 }),
        (5, 64, Rounding::IndexerFp4),
        (4, 256, Rounding::IndexerFp4),
    ] {
        let x = match rounding {
            Rounding::KeyFp8 { .. } => spread(&mut rng, rows * hd),
            Rounding::IndexerFp4 => (0..rows * hd)
                .map(|_| rng.random_range(-40..=40) as f32)
                .collect(),
        };
        let m = matrix(ctx, rows, hd, &x);
        ctx.record("ds4_qat", |rec| ds4::qat(rec, &m, hd, rounding))
            .unwrap();
        let got = ctx.read_matrix(&m).unwrap();
        let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for head in want.chunks_exact_mut(hd) {
            match rounding {
                Rounding::KeyFp8 { n_rot } => round_fp8_blocks(&mut head[..hd - n_rot]),
                Rounding::IndexerFp4 => {
                    hadamard(head);
                    round_fp4_blocks(head);
                }
            }
        }
        check(
            &format!("ds4_qat {rows}x{hd} {rounding:?}"),
            &got,
            &want,
            |_| 0.0,
        );
    }
}

/// The indexer keeps each token's `top_k` visible rows of highest `sum_h relu(q_h . k) w_h`,
/// ties to the earlier row: the scores against the formula in f64, the lists of picked rows
/// exactly against the reference's rule (sort by score, then row; keep the first top_k; list
/// them in row order, `u32::MAX` after) on the kernel's own scores. Keys repeat in runs (`run` equal rows), so exact ties straddle the k-th score;
/// tokens seeing fewer rows than top-k keep them all; up to 25K rows a token (the radix
/// select's passes and the stretches of its final walk, several rows a thread).
#[test]
fn ds4_index_pick_keeps_the_top_k_ties_to_the_earlier_row() {
    let Some(ctx) = shared_ctx() else {
        return;
    };
    let mut rng = rng("ds4_index_pick_keeps_the_top_k_ties_to_the_earlier_row");
    // (T, heads, dim, pos0, top_k, run)
    let cases = [
        (6, 4, 32, 30, 3, 2),
        (40, 8, 64, 0, 5, 4),
        (1, 2, 128, 517, 8, 1),
        (3, 2, 16, 8190, 512, 3),
        (1, 4, 32, 100_000, 512, 64),
        (2, 2, 16, 3000, 0, 1),
    ];
    for (t, heads, dim, pos0, top_k, run) in cases {
        let ratio = 4;
        let n_rows = (pos0 + t) / ratio;
        let q = uniform(&mut rng, t * heads * dim, 1.0);
        let mut keys = uniform(&mut rng, n_rows * dim, 1.0);
        for r in (0..n_rows).filter(|r| r % run != 0) {
            keys.copy_within((r - 1) * dim..r * dim, r * dim);
        }
        let weights = uniform(&mut rng, t * heads, 1.0);
        let (gq, gk, gw) = (
            matrix(ctx, t, heads * dim, &q),
            matrix(ctx, n_rows, dim, &keys),
            matrix(ctx, t, heads, &weights),
        );
        let scores = poisoned(ctx, t, n_rows);
        let picked = poisoned(ctx, t, top_k.max(1));
        let inputs = IndexInputs {
            q: &gq,
            weights: &gw,
            keys: CompressedRows {
                rows: &gk,
                n_rows,
                ratio,
            },
            pos0,
            top_k,
        };
        ctx.record("ds4_index", |rec| {
            ds4::index_pick(rec, inputs, &scores, picked.buffer())
        })
        .unwrap();
        let got: Vec<u32> = ctx
            .read_matrix(&picked)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let got_scores = ctx.read_matrix(&scores).unwrap();
        let weight_scale = 1.0 / ((heads * dim) as f64).sqrt();
        for tok in 0..t {
            let label = format!("{t} tokens from {pos0}, top {top_k}: token {tok}");
            let visible = (pos0 + tok + 1) / ratio;
            let score = |b: usize| -> f64 {
                (0..heads)
                    .map(|h| {
                        let qh = &q[(tok * heads + h) * dim..][..dim];
                        let k = &keys[b * dim..][..dim];
                        let dot: f64 = qh.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                        dot.max(0.0) * weights[tok * heads + h] as f64 * weight_scale
                    })
                    .sum()
            };
            let s = &got_scores[tok * n_rows..][..visible];
            let want_scores: Vec<f64> = (0..visible).map(score).collect();
            check(&format!("{label}: scores"), s, &want_scores, |_| 1e-5);
            let mut order: Vec<usize> = (0..visible).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            order.truncate(top_k);
            order.sort();
            let mut want: Vec<u32> = order.iter().map(|&b| b as u32).collect();
            want.resize(top_k, u32::MAX);
            let got = &got[tok * top_k..(tok + 1) * top_k];
            let wrong: Vec<usize> = (0..top_k).filter(|&i| got[i] != want[i]).collect();
            assert!(
                wrong.is_empty(),
                "{label}: {} of {top_k} listed rows wrong, first at {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(8)]
            );
        }
    }
}

/// `sum_j e^(s_j - M) k_j / (sum_j e^(s_j - M) + e^(sink - M))` over `keys` (also the values),
/// `s_j = q . k_j / sqrt(dim)`, M the largest score or the sink.
fn attend_ref(q: &[f32], keys: &[&[f32]], sink: f64) -> Vec<f64> {
    let scale = 1.0 / (q.len() as f64).sqrt();
    let s: Vec<f64> = keys
        .iter()
        .map(|k| q.iter().zip(*k).map(|(a, b)| (a * b) as f64).sum::<f64>() * scale)
        .collect();
    let m = s.iter().copied().fold(sink, f64::max);
    let mut den = (sink - m).exp();
    let mut out = vec![0.0; q.len()];
    for (sj, k) in s.iter().zip(keys) {
        let e = (sj - m).exp();
        den += e;
        for (o, v) in out.iter_mut().zip(*k) {
            *o += e * *v as f64;
        }
    }
    out.iter().map(|o| o / den).collect()
}

/// Each query head of a chunk attends with its sink over the raw window (its own key
/// included; a window that starts inside the chunk, and one longer than a workgroup's 64
/// keys) and the compressed rows it sees (all, or those picked), against the formula.
#[test]
fn ds4_attend_matches_the_softmax_with_sinks() {
    let Some(ctx) = shared_ctx() else {
        return;
    };
    let mut rng = rng("ds4_attend_matches_the_softmax_with_sinks");
    // (T, heads, head_dim, pos0, window, compressed ratio (0: none), top-k picks (0: none))
    for (t, heads, hd, pos0, window, ratio, top_k) in [
        (6, 4, 32, 0, 4, 0, 0),
        (5, 2, 32, 40, 8, 4, 6),
        (3, 2, 64, 200, 100, 4, 0),
        (9, 3, 32, 250, 128, 128, 0),
        (2, 2, 512, 61, 32, 4, 5),
        (4, 2, 32, 500, 16, 4, 100),
    ] {
        let masked = top_k > 0;
        let before = window - 1;
        let q = uniform(&mut rng, t * heads * hd, 1.0);
        // Raw row r is position pos0 - before + r; rows before position 0 are never read.
        let raw = uniform(&mut rng, (before + t) * hd, 1.0);
        let n_comp = (pos0 + t).checked_div(ratio).unwrap_or(0);
        let comp = uniform(&mut rng, n_comp.max(1) * hd, 1.0);
        let sinks = uniform(&mut rng, heads, 2.0);
        // Each token's list: a random subset of the rows it sees, in row order, u32::MAX after
        // (tokens seeing fewer than top_k rows list them all).
        let lists: Vec<Vec<u32>> = (0..t)
            .map(|tok| {
                let visible = (pos0 + tok + 1).checked_div(ratio).unwrap_or(0);
                let mut rows: Vec<u32> = (0..visible as u32).collect();
                while rows.len() > top_k {
                    rows.remove(rng.random_range(0..rows.len()));
                }
                rows
            })
            .collect();
        let picks: Vec<u32> = lists
            .iter()
            .flat_map(|rows| (0..top_k.max(1)).map(|i| rows.get(i).copied().unwrap_or(u32::MAX)))
            .collect();
        let (gq, graw, gcomp) = (
            matrix(ctx, t, heads * hd, &q),
            matrix(ctx, before + t, hd, &raw),
            matrix(ctx, n_comp.max(1), hd, &comp),
        );
        let gsinks = matrix(ctx, 1, heads, &sinks);
        let picks_f32: Vec<f32> = picks.iter().map(|&p| f32::from_bits(p)).collect();
        let gpicks = matrix(ctx, t, top_k.max(1), &picks_f32);
        let out = poisoned(ctx, t, heads * hd);
        let keys = AttendKeys {
            raw: &graw,
            raw_before: before,
            window,
            compressed: (ratio > 0).then_some(CompressedRows {
                rows: &gcomp,
                n_rows: n_comp,
                ratio,
            }),
            picked: masked.then_some(Picks {
                buffer: gpicks.buffer(),
                top_k,
            }),
            sinks: gsinks.buffer(),
        };
        ctx.record("ds4_attend", |rec| ds4::attend(rec, &gq, pos0, keys, &out))
            .unwrap();
        let got = ctx.read_matrix(&out).unwrap();
        let mut want = Vec::new();
        for tok in 0..t {
            let pos = pos0 + tok;
            let first = (pos + 1).saturating_sub(window);
            let mut keys: Vec<&[f32]> = (first..=pos)
                .map(|p| &raw[(p + before - pos0) * hd..][..hd])
                .collect();
            let visible = (pos + 1).checked_div(ratio).unwrap_or(0);
            keys.extend(
                (0..visible)
                    .filter(|&b| !masked || lists[tok].contains(&(b as u32)))
                    .map(|b| &comp[b * hd..][..hd]),
            );
            for h in 0..heads {
                let qh = &q[(tok * heads + h) * hd..][..hd];
                want.extend(attend_ref(qh, &keys, sinks[h] as f64));
            }
        }
        let label =
            format!("ds4_attend T={t} {heads}x{hd} at {pos0}, window {window}, ratio {ratio}");
        check(&label, &got, &want, |_| 2e-6);
    }
}
