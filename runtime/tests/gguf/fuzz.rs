//! Random corruption of a valid file: the reader may accept or reject it, never panic, and
//! whatever it accepts is safe to walk (every tensor range readable).

use moetile::gguf::{GgufError, GgufFile};
use rand::Rng;

use super::roundtrip::{rich_writer, seeded_rng};

#[test]
fn random_flips_and_truncations_never_panic() {
    let mut rng = seeded_rng();
    let (w, data) = rich_writer(32, &mut rng);
    let slices: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let valid = w.to_bytes(&slices).unwrap();
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        match rng.random_range(0..4) {
            0 => bytes.truncate(rng.random_range(0..valid.len())),
            1 => {
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
            }
            2 => {
                // Overwrite 8 bytes with an extreme or random integer: counts, lengths, dims.
                let i = rng.random_range(0..bytes.len() - 8);
                let v: u64 =
                    [u64::MAX, 1 << 63, u32::MAX as u64, 0, rng.random()][rng.random_range(0..5)];
                bytes[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
                bytes.truncate(rng.random_range(i..valid.len()));
            }
        }
        match GgufFile::from_bytes(bytes) {
            Ok(file) => {
                accepted += 1;
                for t in file.tensors() {
                    assert_eq!(file.tensor_bytes(t).len(), t.len);
                }
                let _ = file.metadata().count();
            }
            Err(e) => {
                rejected += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    eprintln!("accepted {accepted}, rejected {rejected}");
    assert!(
        rejected > 10_000,
        "the mutations must mostly break the file"
    );
}

#[test]
fn every_truncation_of_a_real_vocab_is_a_truncation_error() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/vocab/ggml-vocab-llama-spm.gguf");
    let valid = std::fs::read(&path).unwrap();
    let mut rng = seeded_rng();
    // The file has no tensors and ends with its last metadata value, so any cut breaks it.
    for _ in 0..50 {
        let cut = rng.random_range(0..valid.len());
        let e = GgufFile::from_bytes(valid[..cut].to_vec()).expect_err("truncated vocab");
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::StringTooLong { .. }
                    | GgufError::CountTooLarge { .. }
            ),
            "cut at {cut}: {e:?}"
        );
    }
}
