//! Bit-exactness against gguf-py, through the fixtures tests/fixtures/quant/make_fixtures.py
//! writes (see that script for the file format and how to regenerate).

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tests::gaussian;
use super::*;

const MAGIC: &[u8; 4] = b"MTQF";
const VERSION: u32 = 1;
const FLAG_INPUT: u32 = 1;
const FLAG_ORACLE: u32 = 2;
const REGENERATE: &str = "regenerate with: cargo test -p moetile --release --lib -- --ignored \
     write_moetile_quantized_fixtures && python tests/fixtures/quant/make_fixtures.py";

fn fixture_dir(source: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/quant")
        .join(source)
}

/// One fixture file: blocks of one type, what they dequantize to, and the quantized input if any.
struct Fixture {
    ty: GgmlType,
    input: Option<Vec<f32>>,
    blocks: Vec<u8>,
    expected: Vec<f32>,
    /// Whether gguf-py computed `expected` (unset only in a fresh Rust dump).
    oracle: bool,
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl Fixture {
    fn read(path: &Path) -> Self {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let word = |i: usize| u32::from_le_bytes(data[4 * i..4 * i + 4].try_into().expect("4"));
        assert!(
            data.len() >= 24 && &data[..4] == MAGIC,
            "{}: not a quant fixture",
            path.display()
        );
        assert_eq!(word(1), VERSION, "{}: fixture version", path.display());
        let ty = GgmlType::from_id(word(2)).expect("known type id");
        let (n_blocks, flags) = (word(3) as usize, word(4));
        let n_values = n_blocks * ty.block_values();
        let mut at = 24;
        let mut take = |n: usize| {
            at += n;
            &data[at - n..at]
        };
        let input = (flags & FLAG_INPUT != 0).then(|| f32s(take(4 * n_values)));
        let blocks = take(n_blocks * ty.block_bytes()).to_vec();
        let expected = f32s(take(4 * n_values));
        assert_eq!(
            at,
            data.len(),
            "{}: length does not match its header",
            path.display()
        );
        Self {
            ty,
            input,
            blocks,
            expected,
            oracle: flags & FLAG_ORACLE != 0,
        }
    }

    fn write(&self, path: &Path) {
        let n_blocks = self.expected.len() / self.ty.block_values();
        let flags =
            u32::from(self.input.is_some()) * FLAG_INPUT + u32::from(self.oracle) * FLAG_ORACLE;
        let mut data = MAGIC.to_vec();
        for word in [VERSION, self.ty.id(), n_blocks as u32, flags, 0] {
            data.extend(word.to_le_bytes());
        }
        data.extend(self.input.iter().flatten().flat_map(|v| v.to_le_bytes()));
        data.extend(&self.blocks);
        data.extend(self.expected.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Asserts `got` equals `expected` bit for bit; otherwise prints the first mismatches with their
/// block and the largest difference, then fails.
fn assert_bits_eq(what: &str, ty: GgmlType, expected: &[f32], got: &[f32]) {
    assert_eq!(expected.len(), got.len(), "{what}: lengths");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| expected[i].to_bits() != got[i].to_bits())
        .collect();
    if bad.is_empty() {
        return;
    }
    for &i in bad.iter().take(8) {
        eprintln!(
            "{what}: value {i} (block {}): expected {:e} ({:#010x}), got {:e} ({:#010x})",
            i / ty.block_values(),
            expected[i],
            expected[i].to_bits(),
            got[i],
            got[i].to_bits(),
        );
    }
    let max = bad
        .iter()
        .map(|&i| (expected[i] - got[i]).abs())
        .fold(0.0f32, f32::max);
    panic!(
        "{what}: {} of {} values differ, max |diff| {max:e}",
        bad.len(),
        got.len()
    );
}

fn dequantized(fixture: &Fixture) -> Vec<f32> {
    let mut out = vec![f32::NAN; fixture.expected.len()];
    dequantize(fixture.ty, &fixture.blocks, &mut out).expect("dequantize");
    out
}

fn supports_dequantize(ty: GgmlType) -> bool {
    dequantize(ty, &[], &mut []).is_ok()
}

fn supports_quantize(ty: GgmlType) -> bool {
    quantize(ty, &[], &mut Vec::new()).is_ok()
}

#[test]
fn random_blocks_dequantize_like_gguf_py() {
    for ty in GgmlType::all().filter(|&ty| supports_dequantize(ty)) {
        let path = fixture_dir("random").join(format!("{ty}.bin"));
        let fixture = Fixture::read(&path);
        assert_eq!(fixture.ty, ty, "{}", path.display());
        assert_bits_eq(
            &format!("{ty} random blocks"),
            ty,
            &fixture.expected,
            &dequantized(&fixture),
        );
    }
}

#[test]
fn gguf_py_quantized_blocks_dequantize_like_gguf_py() {
    let paths = std::fs::read_dir(fixture_dir("gguf_py_quantized")).expect("fixture folder");
    let mut seen = 0;
    for path in paths.map(|entry| entry.expect("dir entry").path()) {
        let fixture = Fixture::read(&path);
        let ty = fixture.ty;
        assert_bits_eq(
            &format!("{ty} gguf-py blocks"),
            ty,
            &fixture.expected,
            &dequantized(&fixture),
        );
        // Where we quantize too, ours must be gguf-py's (= ggml's reference) bit for bit.
        if supports_quantize(ty) {
            let mut ours = Vec::new();
            quantize(ty, fixture.input.as_ref().expect("input"), &mut ours).expect("quantize");
            let differ = ours
                .iter()
                .zip(&fixture.blocks)
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differ, 0,
                "{ty}: our quantizer differs from gguf-py's in {differ} bytes"
            );
        }
        seen += 1;
    }
    assert_eq!(
        seen, 7,
        "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16 and MXFP4 fixtures"
    );
}

#[test]
fn moetile_quantized_blocks_dequantize_like_gguf_py() {
    for ty in GgmlType::all().filter(|&ty| supports_quantize(ty)) {
        let path = fixture_dir("moetile_quantized").join(format!("{ty}.bin"));
        let fixture = Fixture::read(&path);
        assert!(
            fixture.oracle,
            "{}: not yet dequantized by gguf-py; {REGENERATE}",
            path.display()
        );
        // The committed blocks must still be what our quantizer writes, or the gguf-py check
        // below vouches for an old quantizer.
        let mut ours = Vec::new();
        quantize(ty, fixture.input.as_ref().expect("input"), &mut ours).expect("quantize");
        assert!(
            ours == fixture.blocks,
            "{ty}: quantizer output changed; {REGENERATE}"
        );
        assert_bits_eq(
            &format!("{ty} moetile blocks"),
            ty,
            &fixture.expected,
            &dequantized(&fixture),
        );
    }
}

/// Types whose quantizer is ggml's reference one, so `llama-quantize` (without an importance
/// matrix) wrote exactly our blocks. The other llama fixtures (IQ2_XXS, quantized by ggml with an
/// importance matrix) check dequantization of real blocks only.
const LLAMA_IDENTICAL: [GgmlType; 5] = [
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn llama_quantized_blocks_match_our_quantizers() {
    let paths = std::fs::read_dir(fixture_dir("llama_quantized")).expect("fixture folder");
    let mut seen = Vec::new();
    for path in paths.map(|entry| entry.expect("dir entry").path()) {
        let fixture = Fixture::read(&path);
        let ty = fixture.ty;
        assert_bits_eq(
            &format!("{ty} llama blocks"),
            ty,
            &fixture.expected,
            &dequantized(&fixture),
        );
        if LLAMA_IDENTICAL.contains(&ty) {
            let mut ours = Vec::new();
            quantize(ty, fixture.input.as_ref().expect("input"), &mut ours).expect("quantize");
            let bb = ty.block_bytes();
            let differ: Vec<usize> = (0..fixture.blocks.len() / bb)
                .filter(|&b| ours[b * bb..(b + 1) * bb] != fixture.blocks[b * bb..(b + 1) * bb])
                .collect();
            assert!(
                differ.is_empty(),
                "{ty}: blocks {differ:?} differ from llama-quantize's"
            );
        }
        seen.push(ty);
    }
    for ty in LLAMA_IDENTICAL.iter().chain([&GgmlType::IQ2_XXS]) {
        assert!(seen.contains(ty), "no llama_quantized/{ty}.bin");
    }
}

/// Writes `moetile_quantized/TYPE.bin` for every type we quantize: Gaussian blocks of varied
/// scale and the degenerate cases, our blocks, and our dequantization (which make_fixtures.py
/// then replaces with gguf-py's).
#[test]
#[ignore = "writes fixtures; run by hand, then make_fixtures.py"]
fn write_moetile_quantized_fixtures() {
    let mut rng = StdRng::seed_from_u64(0x6d6f_6574);
    let mut input = Vec::with_capacity(8 * QK_K);
    for chunk in 0..8 {
        let g = gaussian(&mut rng, QK_K);
        let scale = 10f32.powf(rng.random_range(-3.0..1.0));
        input.extend(g.iter().enumerate().map(|(i, &v)| match chunk {
            0 => 0.0,
            1 => 0.75,
            2 if i == 5 => 40.0,
            3 => v * 1e-6,
            4 => -v.abs() * scale,
            _ => v * scale,
        }));
    }
    let dir = fixture_dir("moetile_quantized");
    std::fs::create_dir_all(&dir).expect("fixture folder");
    for ty in GgmlType::all().filter(|&ty| supports_quantize(ty)) {
        let mut blocks = Vec::new();
        quantize(ty, &input, &mut blocks).expect("quantize");
        let mut expected = vec![f32::NAN; input.len()];
        dequantize(ty, &blocks, &mut expected).expect("dequantize");
        let fixture = Fixture {
            ty,
            input: Some(input.clone()),
            blocks,
            expected,
            oracle: false,
        };
        fixture.write(&dir.join(format!("{ty}.bin")));
    }
}
