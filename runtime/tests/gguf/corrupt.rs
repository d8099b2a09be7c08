//! Corrupt files: each case breaks one field and checks the reader's error variant and that
//! its message names the culprit (field, key or tensor), not merely that parsing failed.

use moetile::gguf::{GgufError, GgufFile, GgufWriter, MAX_ARRAY_DEPTH};
use moetile::quant::GgmlType;

use super::raw::{F32, Q4_K, Raw, T_ARRAY, T_BOOL, T_STRING, T_U8, T_U32, T_U64};

/// Parses `bytes`, expecting failure; returns the error and its message.
fn fail(bytes: impl Into<Vec<u8>>) -> (GgufError, String) {
    let e = GgufFile::from_bytes(bytes.into()).expect_err("corrupt file must be rejected");
    let msg = e.to_string();
    (e, msg)
}

/// A file with one F32 tensor of `n` values, named `name`, at relative `offset`.
fn one_tensor(name: &str, dims: &[u64], ty: u32, offset: u64, data_bytes: usize) -> Raw {
    Raw::header(3, 1, 0)
        .tensor(name, dims, ty, offset)
        .data(32, data_bytes)
}

#[test]
fn truncated_header() {
    let (e, msg) = fail(*b"GGUF\x03\x00");
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                offset: 4,
                needed: 4,
                available: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`version`"), "{msg}");
    let (e, msg) = fail(Raw::header(3, 0, 0).0[..20].to_vec());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e:?}");
    assert!(msg.contains("`metadata_kv_count`"), "{msg}");
}

#[test]
fn empty_file_and_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e:?}");
    assert!(e.to_string().contains("`magic`"), "{e}");

    let missing = dir.path().join("no-such-model.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-model.gguf"), "{e}");
}

#[test]
fn bad_magic() {
    let mut bytes = Raw::header(3, 0, 0).0;
    bytes[..4].copy_from_slice(b"GGML");
    let (e, msg) = fail(bytes);
    assert!(
        matches!(e, GgufError::BadMagic { found } if &found == b"GGML"),
        "{e:?}"
    );
    assert!(msg.contains("\"GGUF\""), "{msg}");
}

#[test]
fn unsupported_version() {
    let (e, msg) = fail(Raw::header(1, 0, 0).0);
    assert!(
        matches!(e, GgufError::UnsupportedVersion { version: 1 }),
        "{e:?}"
    );
    assert!(msg.contains("version 1 is not supported"), "{msg}");
    let (e, _) = fail(Raw::header(4, 0, 0).0);
    assert!(
        matches!(e, GgufError::UnsupportedVersion { version: 4 }),
        "{e:?}"
    );
    let (e, msg) = fail(Raw::header(3u32.swap_bytes(), 0, 0).0);
    assert!(matches!(e, GgufError::BigEndian { .. }), "{e:?}");
    assert!(msg.contains("big-endian"), "{msg}");
}

#[test]
fn truncated_metadata() {
    let bytes = Raw::header(3, 0, 2)
        .kv_u32("a.first", 1)
        .str("b.second")
        .u32(T_U64)
        .u32(7);
    let (e, msg) = fail(bytes.0);
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                needed: 8,
                available: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`b.second`"), "{msg}");
    // Cut inside the key of the second entry: its length says 8, 3 bytes are left.
    let bytes = Raw::header(3, 0, 2).kv_u32("a.first", 1).str("b.second");
    let cut = bytes.0.len() - 5;
    let (e, msg) = fail(bytes.0[..cut].to_vec());
    assert!(
        matches!(
            e,
            GgufError::StringTooLong {
                len: 8,
                available: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("metadata entry #1"), "{msg}");
}

#[test]
fn huge_tensor_and_metadata_counts() {
    let (e, msg) = fail(Raw::header(3, u64::MAX, 0).0);
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                count: u64::MAX,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`tensor_count`"), "{msg}");
    let (e, msg) = fail(Raw::header(3, 0, 1 << 40).kv_u32("k", 1).0);
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                count: 0x100_0000_0000,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`metadata_kv_count`"), "{msg}");
}

#[test]
fn huge_string_length() {
    let (e, msg) = fail(
        Raw::header(3, 0, 1)
            .u64(u64::MAX)
            .bytes(b"key and some more")
            .0,
    );
    assert!(
        matches!(
            e,
            GgufError::StringTooLong {
                len: u64::MAX,
                available: 17,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("metadata entry #0"), "{msg}");
    let bytes = Raw::header(3, 0, 1)
        .str("general.name")
        .u32(T_STRING)
        .u64(1 << 62)
        .bytes(b"x");
    let (e, msg) = fail(bytes.0);
    assert!(matches!(e, GgufError::StringTooLong { .. }), "{e:?}");
    assert!(msg.contains("`general.name`"), "{msg}");
}

#[test]
fn huge_array_counts() {
    let numbers = Raw::header(3, 0, 1)
        .str("n.scores")
        .u32(T_ARRAY)
        .u32(T_U32)
        .u64(1 << 61);
    let (e, msg) = fail(numbers.u32(0).0);
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                count: 0x2000_0000_0000_0000,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`n.scores`"), "{msg}");
    let strings = Raw::header(3, 0, 1)
        .str("tokenizer.ggml.tokens")
        .u32(T_ARRAY)
        .u32(T_STRING);
    let (e, msg) = fail(strings.u64(u64::MAX).str("a").0);
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                min_item_bytes: 8,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`tokenizer.ggml.tokens`"), "{msg}");
    let nested = Raw::header(3, 0, 1)
        .str("n.nested")
        .u32(T_ARRAY)
        .u32(T_ARRAY)
        .u64(1 << 40);
    let (e, msg) = fail(nested.u32(T_U8).u64(0).0);
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                min_item_bytes: 12,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`n.nested`"), "{msg}");
}

#[test]
fn unknown_value_type() {
    let (e, msg) = fail(Raw::header(3, 0, 1).str("x.odd").u32(13).u32(0).0);
    assert!(
        matches!(e, GgufError::UnknownValueType { id: 13, .. }),
        "{e:?}"
    );
    assert!(msg.contains("`x.odd`"), "{msg}");
    let (e, msg) = fail(
        Raw::header(3, 0, 1)
            .str("x.arr")
            .u32(T_ARRAY)
            .u32(99)
            .u64(0)
            .0,
    );
    assert!(
        matches!(e, GgufError::UnknownValueType { id: 99, .. }),
        "{e:?}"
    );
    assert!(msg.contains("`x.arr`"), "{msg}");
}

#[test]
fn bool_byte_other_than_0_or_1() {
    let (e, msg) = fail(Raw::header(3, 0, 1).str("add_bos").u32(T_BOOL).u8(2).0);
    assert!(matches!(e, GgufError::InvalidBool { byte: 2, .. }), "{e:?}");
    assert!(msg.contains("`add_bos`"), "{msg}");
    let arr = Raw::header(3, 0, 1)
        .str("flags")
        .u32(T_ARRAY)
        .u32(T_BOOL)
        .u64(3);
    let (e, msg) = fail(arr.u8(0).u8(1).u8(255).0);
    assert!(
        matches!(e, GgufError::InvalidBool { byte: 255, .. }),
        "{e:?}"
    );
    assert!(msg.contains("element 2 of metadata key `flags`"), "{msg}");
}

#[test]
fn invalid_utf8_in_key_and_in_array_element() {
    let bytes = Raw::header(3, 0, 1)
        .u64(4)
        .bytes(b"ab\xffc")
        .u32(T_U32)
        .u32(0);
    let (e, msg) = fail(bytes.0);
    assert!(
        matches!(e, GgufError::InvalidUtf8 { offset: 34, .. }),
        "{e:?}"
    );
    assert!(msg.contains("metadata entry #0"), "{msg}");
    let tokens = Raw::header(3, 0, 1)
        .str("tokenizer.ggml.tokens")
        .u32(T_ARRAY)
        .u32(T_STRING);
    let tokens = tokens.u64(2).str("ok").u64(2).bytes(b"\xc3\x28");
    let (e, msg) = fail(tokens.0);
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e:?}");
    assert!(
        msg.contains("element 1 of metadata key `tokenizer.ggml.tokens`"),
        "{msg}"
    );
}

#[test]
fn nested_array_too_deep() {
    let mut bytes = Raw::header(3, 0, 1).str("x.deep").u32(T_ARRAY);
    for _ in 0..MAX_ARRAY_DEPTH {
        bytes = bytes.u32(T_ARRAY).u64(1);
    }
    let (e, msg) = fail(bytes.u32(T_U8).u64(0).0);
    assert!(
        matches!(
            e,
            GgufError::ArrayTooDeep {
                max: MAX_ARRAY_DEPTH,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`x.deep`"), "{msg}");
}

#[test]
fn duplicate_metadata_key_and_tensor_name() {
    let (e, msg) = fail(
        Raw::header(3, 0, 2)
            .kv_u32("dup.key", 1)
            .kv_u32("dup.key", 2)
            .0,
    );
    assert!(matches!(e, GgufError::DuplicateKey { .. }), "{e:?}");
    assert!(msg.contains("`dup.key`"), "{msg}");
    let bytes = Raw::header(3, 2, 0)
        .tensor("blk.0.x", &[8], F32, 0)
        .tensor("blk.0.x", &[8], F32, 32)
        .data(32, 64);
    let (e, msg) = fail(bytes.0);
    assert!(matches!(e, GgufError::DuplicateTensor { .. }), "{e:?}");
    assert!(msg.contains("`blk.0.x`"), "{msg}");
}

#[test]
fn wrong_alignment_values() {
    for bad in [0, 48] {
        let (e, msg) = fail(Raw::header(3, 0, 1).kv_u32("general.alignment", bad).0);
        assert!(
            matches!(e, GgufError::BadAlignment { value } if value == bad.into()),
            "{e:?}"
        );
        assert!(
            msg.contains("general.alignment") && msg.contains("power of two"),
            "{msg}"
        );
    }
    let (e, msg) = fail(
        Raw::header(3, 0, 1)
            .str("general.alignment")
            .u32(T_STRING)
            .str("32")
            .0,
    );
    assert!(matches!(e, GgufError::WrongType { .. }), "{e:?}");
    assert!(msg.contains("`general.alignment` is string"), "{msg}");
}

#[test]
fn unaligned_tensor_offset() {
    let (e, msg) = fail(one_tensor("blk.0.w", &[2], F32, 8, 64).0);
    assert!(
        matches!(
            e,
            GgufError::UnalignedTensor {
                offset: 8,
                alignment: 32,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`blk.0.w`"), "{msg}");
    // Aligned to the default 32 but not to the declared 64.
    let bytes = Raw::header(3, 1, 1)
        .kv_u32("general.alignment", 64)
        .tensor("blk.1.w", &[2], F32, 32)
        .data(64, 128);
    let (e, msg) = fail(bytes.0);
    assert!(
        matches!(
            e,
            GgufError::UnalignedTensor {
                offset: 32,
                alignment: 64,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`blk.1.w`"), "{msg}");
}

#[test]
fn overlapping_tensors() {
    let bytes = Raw::header(3, 2, 0)
        .tensor("first", &[16], F32, 0)
        .tensor("second", &[8], F32, 32)
        .data(32, 128);
    let (e, msg) = fail(bytes.0);
    assert!(
        matches!(&e, GgufError::OverlappingTensors { first, second, .. }
        if first == "first" && second == "second"),
        "{e:?}"
    );
    assert!(msg.contains("`first`") && msg.contains("`second`"), "{msg}");
}

#[test]
fn tensor_past_end_of_file() {
    let (e, msg) = fail(one_tensor("output.weight", &[16], F32, 0, 63).0);
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e:?}");
    assert!(
        msg.contains("`output.weight`") && msg.contains("truncated"),
        "{msg}"
    );
    // An offset so large that offset + length overflows.
    let (e, msg) = fail(one_tensor("far.away", &[16], F32, u64::MAX - 31, 64).0);
    assert!(
        matches!(e, GgufError::TensorOutOfBounds { end: u64::MAX, .. }),
        "{e:?}"
    );
    assert!(msg.contains("`far.away`"), "{msg}");
}

#[test]
fn unknown_tensor_type_id() {
    // Id 4 was Q4_2, retired from ggml; 1000 never existed.
    for id in [4, 1000] {
        let (e, msg) = fail(one_tensor("blk.0.retired", &[32], id, 0, 32).0);
        assert!(
            matches!(e, GgufError::UnknownTensorType { id: got, .. } if got == id),
            "{e:?}"
        );
        assert!(msg.contains("`blk.0.retired`"), "{msg}");
    }
}

#[test]
fn zero_dimension() {
    let (e, msg) = fail(one_tensor("empty.rows", &[4, 0], F32, 0, 32).0);
    assert!(matches!(e, GgufError::ZeroDim { .. }), "{e:?}");
    assert!(
        msg.contains("`empty.rows`") && msg.contains("[4, 0]"),
        "{msg}"
    );
}

#[test]
fn too_many_dimensions() {
    let (e, msg) = fail(one_tensor("five.d", &[1, 1, 1, 1, 1], F32, 0, 32).0);
    assert!(
        matches!(
            e,
            GgufError::TooManyDims {
                n_dims: 5,
                max: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("`five.d`"), "{msg}");
    // A dim count of u32::MAX must fail before anything is allocated for it.
    let bytes = Raw::header(3, 1, 0).str("huge.d").u32(u32::MAX).u64(1);
    let (e, _) = fail(bytes.0);
    assert!(matches!(e, GgufError::TooManyDims { .. }), "{e:?}");
}

#[test]
fn dims_inconsistent_with_block_size() {
    let (e, msg) = fail(one_tensor("blk.0.ffn_up.weight", &[100, 4], Q4_K, 0, 4096).0);
    assert!(
        matches!(
            e,
            GgufError::BlockMismatch {
                ty: GgmlType::Q4_K,
                row_len: 100,
                block_values: 256,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("`blk.0.ffn_up.weight`") && msg.contains("Q4_K"),
        "{msg}"
    );
}

#[test]
fn dims_that_overflow() {
    let (e, msg) = fail(one_tensor("big", &[1 << 40, 1 << 40, 1 << 40], F32, 0, 32).0);
    assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e:?}");
    assert!(msg.contains("`big`"), "{msg}");
    // Regression: a row this long made `GgmlType::row_bytes` overflow (a panic in debug
    // builds) before the reader bounded it; found by the fuzz test.
    let (e, msg) = fail(one_tensor("wide.row", &[1 << 62], F32, 0, 32).0);
    assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e:?}");
    assert!(msg.contains("`wide.row`"), "{msg}");
    // Fits in usize but not in ggml's i64 element count.
    let (e, _) = fail(one_tensor("big.i64", &[1 << 32, 1 << 31], GgmlType::I8.id(), 0, 32).0);
    assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e:?}");
}

#[test]
fn vocabulary_only_file_may_end_before_the_data_padding() {
    // Real llama.cpp vocab files do this: no tensors, no padding after the header.
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", "gpt2").unwrap();
    let mut bytes = w.to_bytes(&[]).unwrap();
    let unpadded = bytes.len() - bytes.iter().rev().take_while(|&&b| b == 0).count();
    bytes.truncate(unpadded);
    assert_ne!(bytes.len() % 32, 0, "the test needs an unaligned end");
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert!(file.data_offset() > unpadded);
}
