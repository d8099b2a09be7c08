//! Type table, block layouts, IQ tables, quantizer accuracy and API contracts. Bit-exactness
//! against gguf-py lives in `fixtures.rs`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Standard normal samples (Box-Muller), so the tests need no extra crate.
pub(super) fn gaussian(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random(), rng.random());
            ((-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Relative RMSE of `ty`'s round trip: `sqrt(Σ(x - y)² / Σx²)`.
fn round_trip_error(ty: GgmlType, x: &[f32]) -> f64 {
    let mut bytes = Vec::new();
    quantize(ty, x, &mut bytes).expect("quantize");
    let mut y = vec![f32::NAN; x.len()];
    dequantize(ty, &bytes, &mut y).expect("dequantize");
    let err: f64 = x
        .iter()
        .zip(&y)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let norm: f64 = x.iter().map(|&a| f64::from(a).powi(2)).sum();
    (err / norm).sqrt()
}

#[test]
fn type_table_round_trips_ids_and_names() {
    for t in GgmlType::all() {
        assert_eq!(GgmlType::from_id(t.id()), Some(t));
        assert!(!t.name().is_empty());
    }
    assert_eq!(GgmlType::from_id(4), None, "Q4_2 was retired");
    assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
    assert_eq!(GgmlType::Q4_K.row_bytes(100), None);
}

#[test]
fn block_structs_match_type_table() {
    fn check<B: block::Block>(ty: GgmlType) {
        assert_eq!(size_of::<B>(), ty.block_bytes(), "{ty}: block size");
        assert_eq!(B::VALUES, ty.block_values(), "{ty}: values per block");
        assert_eq!(
            align_of::<B>(),
            1,
            "{ty}: blocks must cast from any byte offset"
        );
    }
    check::<BlockQ4_0>(GgmlType::Q4_0);
    check::<BlockQ4_1>(GgmlType::Q4_1);
    check::<BlockQ5_0>(GgmlType::Q5_0);
    check::<BlockQ5_1>(GgmlType::Q5_1);
    check::<BlockQ8_0>(GgmlType::Q8_0);
    check::<BlockQ2K>(GgmlType::Q2_K);
    check::<BlockQ3K>(GgmlType::Q3_K);
    check::<BlockQ4K>(GgmlType::Q4_K);
    check::<BlockQ5K>(GgmlType::Q5_K);
    check::<BlockQ6K>(GgmlType::Q6_K);
    check::<BlockIq2Xxs>(GgmlType::IQ2_XXS);
    check::<BlockIq2Xs>(GgmlType::IQ2_XS);
    check::<BlockIq4Nl>(GgmlType::IQ4_NL);
    check::<BlockIq4Xs>(GgmlType::IQ4_XS);
    check::<BlockMxfp4>(GgmlType::MXFP4);
}

/// FNV-1a 64, the checksum make_fixtures.py wrote for gguf-py's copies of the tables.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn iq_tables_match_gguf_py() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/quant/iq_tables.txt"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let words = |t: &[u64]| t.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    let ours: [(&str, Vec<u8>); 5] = [
        ("iq2xxs_grid", words(&IQ2XXS_GRID)),
        ("iq2xs_grid", words(&IQ2XS_GRID)),
        ("ksigns_iq2xs", KSIGNS_IQ2XS.to_vec()),
        ("kmask_iq2xs", KMASK_IQ2XS.to_vec()),
        ("kvalues_iq4nl", KVALUES_IQ4NL.map(|v| v as u8).to_vec()),
    ];
    let expected: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert_eq!(expected.len(), ours.len(), "{path}: one line per table");
    for (name, bytes) in &ours {
        let want = expected.iter().find(|e| e.0 == *name).map(|e| e.1);
        let got = format!("{:016x}", fnv1a64(bytes));
        assert_eq!(
            Some(got.as_str()),
            want,
            "{name} differs from gguf-py's copy"
        );
    }
}

/// Round-trip bounds: relative RMSE on standard normal data. Each is the value measured over
/// 5 seeds of 64 Ki values (spread under 1% between seeds) plus about 15%: loose enough for any
/// seed, tight enough that losing a bit of precision or mis-packing a field fails. The measured
/// values match the step/√12 rounding error of each format: e.g. a Q4_K sub-block of 32 spans
/// about 4σ in 15 steps, giving 0.27σ/√12 ≈ 7.7%; Q6_K spans ±1.8σ in 64 steps (1.6%); Q2_K's 3
/// steps give about 30%, the same as ggml's own IQ2_XXS with an importance matrix (34.6% on the
/// oracle's tiny qwen3moe weights, where ours measures 33.3%).
const ROUND_TRIP_BOUNDS: [(GgmlType, f64); 10] = [
    (GgmlType::F32, 0.0),
    (GgmlType::F16, 2.5e-4),   // measured 2.1e-4: 11-bit significand
    (GgmlType::BF16, 2.0e-3),  // measured 1.66e-3: 8-bit significand
    (GgmlType::Q8_0, 0.0062),  // measured 0.0053
    (GgmlType::Q6_K, 0.0205),  // measured 0.0177
    (GgmlType::Q5_K, 0.042),   // measured 0.0361
    (GgmlType::Q4_K, 0.082),   // measured 0.0713
    (GgmlType::Q2_K, 0.34),    // measured 0.296
    (GgmlType::IQ2_XXS, 0.38), // measured 0.333
    (GgmlType::MXFP4, 0.133),  // measured 0.1155: 1 mantissa bit, top 1/4 of a binade saturates
];

#[test]
fn round_trip_error_within_bounds() {
    let seed: u64 = rand::random();
    let x = gaussian(&mut StdRng::seed_from_u64(seed), 256 * QK_K);
    for (ty, bound) in ROUND_TRIP_BOUNDS {
        let err = round_trip_error(ty, &x);
        println!("{ty}: relative RMSE {err:.5} (bound {bound})");
        assert!(
            err <= bound,
            "{ty}: relative RMSE {err} > {bound} (seed {seed})"
        );
    }
}

/// Every finite MXFP4 value is representable, so quantizing dequantized blocks gives them back:
/// the values for any block with a finite scale (`e <= 252`; from 253 the largest codes overflow
/// f32), and the bytes too for blocks our quantizer wrote (its largest code is 8 or 12, which
/// fixes the exponent, and it never writes the negative zero code 8).
#[test]
fn mxfp4_requantizes_its_own_values_exactly() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut blocks: Vec<u8> = (0..253u32 * 17).map(|_| rng.random()).collect();
    for (e, block) in blocks.chunks_exact_mut(17).enumerate() {
        block[0] = e as u8;
    }
    let n = blocks.len() / 17 * QK;
    let (mut y, mut z) = (vec![f32::NAN; n], vec![f32::NAN; n]);
    dequantize(GgmlType::MXFP4, &blocks, &mut y).expect("dequantize");
    let mut again = Vec::new();
    quantize(GgmlType::MXFP4, &y, &mut again).expect("quantize");
    dequantize(GgmlType::MXFP4, &again, &mut z).expect("dequantize");
    assert_eq!(y, z, "dequantized values re-quantize to themselves");

    let x: Vec<f32> = gaussian(&mut rng, 64 * QK)
        .chunks_exact(QK)
        .enumerate()
        .flat_map(|(i, b)| b.iter().map(move |v| v * 2f32.powi(i as i32 - 32)))
        .collect();
    let mut ours = Vec::new();
    quantize(GgmlType::MXFP4, &x, &mut ours).expect("quantize");
    let mut y = vec![f32::NAN; x.len()];
    dequantize(GgmlType::MXFP4, &ours, &mut y).expect("dequantize");
    let mut again = Vec::new();
    quantize(GgmlType::MXFP4, &y, &mut again).expect("quantize");
    assert!(
        again == ours,
        "quantizer output re-quantizes to the same bytes"
    );
}

#[test]
fn every_quantizable_type_has_a_round_trip_bound() {
    for ty in GgmlType::all() {
        let quantizable = quantize(ty, &[], &mut Vec::new()).is_ok();
        let bounded = ROUND_TRIP_BOUNDS.iter().any(|b| b.0 == ty);
        assert_eq!(
            quantizable, bounded,
            "{ty}: quantizable but no bound, or the reverse"
        );
    }
}

#[test]
fn quantizers_handle_degenerate_blocks() {
    // All zero, constant, one outlier, tiny (f16-subnormal scales) and all negative blocks:
    // finite output, zeros stay zero, and the error stays within twice the Gaussian bound.
    let mut rng = StdRng::seed_from_u64(7);
    let g = gaussian(&mut rng, QK_K);
    let cases: [(&str, Vec<f32>); 5] = [
        ("zero", vec![0.0; QK_K]),
        ("constant", vec![0.75; QK_K]),
        (
            "outlier",
            (0..QK_K)
                .map(|i| if i == 5 { 40.0 } else { g[i] })
                .collect(),
        ),
        ("tiny", g.iter().map(|v| v * 1e-6).collect()),
        ("negative", g.iter().map(|v| -v.abs()).collect()),
    ];
    for (ty, bound) in ROUND_TRIP_BOUNDS {
        for (name, x) in &cases {
            let mut bytes = Vec::new();
            quantize(ty, x, &mut bytes).expect("quantize");
            let mut y = vec![f32::NAN; QK_K];
            dequantize(ty, &bytes, &mut y).expect("dequantize");
            assert!(
                y.iter().all(|v| v.is_finite()),
                "{ty} {name}: non-finite output"
            );
            if *name == "zero" {
                assert!(y.iter().all(|&v| v == 0.0), "{ty}: zeros must stay zero");
            } else if *name != "tiny" && *name != "outlier" {
                let err = round_trip_error(ty, x);
                assert!(err <= 2.0 * bound, "{ty} {name}: relative RMSE {err}");
            }
        }
    }
}

#[test]
fn quantize_appends_whole_blocks() {
    let x = gaussian(&mut StdRng::seed_from_u64(1), 2 * QK_K);
    for (ty, _) in ROUND_TRIP_BOUNDS {
        let mut out = vec![0xAB; 3];
        quantize(ty, &x, &mut out).expect("quantize");
        assert_eq!(out[..3], [0xAB; 3], "{ty}: existing bytes kept");
        assert_eq!(
            out.len() - 3,
            ty.row_bytes(x.len()).expect("whole blocks"),
            "{ty}"
        );
    }
}

#[test]
fn quantize_rejects_bad_input() {
    let mut out = Vec::new();
    let err = quantize(GgmlType::Q4_K, &[0.0; 100], &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PartialBlock {
                values: 100,
                block: 256,
                ..
            }
        ),
        "{err}"
    );
    let mut x = vec![0.0; 32];
    x[7] = f32::NAN;
    let err = quantize(GgmlType::Q8_0, &x, &mut out).unwrap_err();
    assert!(matches!(err, Error::NonFinite { index: 7, .. }), "{err}");
    let err = quantize(GgmlType::Q3_K, &[0.0; 256], &mut out).unwrap_err();
    assert!(matches!(err, Error::UnsupportedType { .. }), "{err}");
    assert!(out.is_empty(), "nothing appended on error");
}

#[test]
fn dequantize_rejects_mismatched_lengths_and_unsupported_types() {
    let err = dequantize(GgmlType::Q4_K, &[0; 143], &mut [0.0; 256]).unwrap_err();
    assert!(matches!(err, Error::BlockMismatch { .. }), "{err}");
    let err = dequantize(GgmlType::Q4_K, &[0; 144], &mut [0.0; 255]).unwrap_err();
    assert!(matches!(err, Error::BlockMismatch { .. }), "{err}");
    let err = dequantize(GgmlType::IQ3_S, &[0; 110], &mut [0.0; 256]).unwrap_err();
    assert!(matches!(err, Error::UnsupportedType { .. }), "{err}");
}

#[test]
fn dequantize_reads_blocks_at_any_byte_offset() {
    let x = gaussian(&mut StdRng::seed_from_u64(2), QK_K);
    let mut bytes = vec![0];
    quantize(GgmlType::Q4_K, &x, &mut bytes).expect("quantize");
    let (mut at_1, mut at_0) = (vec![0.0; QK_K], vec![0.0; QK_K]);
    dequantize(GgmlType::Q4_K, &bytes[1..], &mut at_1).expect("odd address");
    let copy = bytes[1..].to_vec();
    dequantize(GgmlType::Q4_K, &copy, &mut at_0).expect("fresh allocation");
    assert_eq!(at_1, at_0);
}
