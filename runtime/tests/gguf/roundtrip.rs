//! Writer -> reader round trips: every value type, nested arrays, tensors of several types and
//! shapes, alignments 32 and 64, streaming to a file and reading it back through the map.

use moetile::gguf::{Array, GgufError, GgufFile, GgufWriter, Value, ValueType};
use moetile::quant::GgmlType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One metadata entry of every value type, arrays of every element type (empty ones too),
/// and arrays of arrays with mixed inner types, three levels deep.
pub fn every_value() -> Vec<(&'static str, Value)> {
    let nested = Array::Array(vec![
        Array::Array(vec![
            Array::U8(vec![1, 2]),
            Array::String(vec!["deep".into()]),
        ]),
        Array::Array(vec![]),
        Array::F64(vec![0.5]),
    ]);
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60_000)),
        ("t.i16", Value::I16(-30_000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(1e-5)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::from("héllo, 世界 \u{1F600}")),
        ("t.empty_string", Value::from("")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(-1.0 / 3.0)),
        ("a.u8", Array::from(vec![0u8, 255]).into()),
        ("a.i8", Array::from(vec![-128i8, 127]).into()),
        ("a.u16", Array::from(vec![1u16, 65_535]).into()),
        ("a.i16", Array::from(vec![-32_768i16]).into()),
        ("a.u32", Array::from(vec![1u32, 2, 3]).into()),
        ("a.i32", Array::from(vec![-1i32, 0, 1]).into()),
        (
            "a.f32",
            Array::from(vec![0.25f32, -0.0, f32::INFINITY]).into(),
        ),
        ("a.bool", Array::from(vec![true, false, true]).into()),
        (
            "a.string",
            Array::from(vec!["a".to_string(), String::new(), "ü".into()]).into(),
        ),
        ("a.u64", Array::from(vec![u64::MAX, 0]).into()),
        ("a.i64", Array::from(vec![i64::MIN, i64::MAX]).into()),
        ("a.f64", Array::from(vec![std::f64::consts::PI]).into()),
        ("a.empty", Array::from(Vec::<u32>::new()).into()),
        ("a.nested", nested.into()),
    ]
}

/// `(name, type, dims)` of tensors of several types, 1 to 4 dims.
pub const TENSORS: [(&str, GgmlType, &[usize]); 6] = [
    ("token_embd.weight", GgmlType::F32, &[8, 5]),
    ("blk.0.attn_norm.weight", GgmlType::F16, &[3]),
    ("blk.0.ffn_gate_exps.weight", GgmlType::Q4_K, &[512, 3, 2]),
    ("blk.0.ffn_down_exps.weight", GgmlType::Q8_0, &[64, 2, 2, 1]),
    ("blk.0.ffn_up_exps.weight", GgmlType::IQ2_XXS, &[256, 1, 3]),
    ("positions", GgmlType::I32, &[7]),
];

/// A writer declaring [`every_value`] and [`TENSORS`] at `alignment`, and random data for
/// each tensor.
pub fn rich_writer(alignment: u32, rng: &mut StdRng) -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", alignment).unwrap();
    for (k, v) in every_value() {
        w.add_metadata(k, v).unwrap();
    }
    let data = TENSORS
        .iter()
        .map(|&(name, ty, dims)| {
            w.add_tensor(name, ty, dims).unwrap();
            let len = ty.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<usize>();
            (0..len).map(|_| rng.random()).collect()
        })
        .collect();
    (w, data)
}

/// A seeded generator; the seed is printed so a failure reproduces (`MOETILE_SEED=...`).
pub fn seeded_rng() -> StdRng {
    let seed = std::env::var("MOETILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("seed: MOETILE_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn check_rich_file(file: &GgufFile, alignment: usize, data: &[Vec<u8>]) {
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), alignment);
    assert_eq!(file.data_offset() % alignment, 0);
    let mut expected = vec![("general.alignment", Value::U32(alignment as u32))];
    expected.extend(every_value());
    let got: Vec<(&str, Value)> = file.metadata().map(|(k, v)| (k, v.clone())).collect();
    assert_eq!(got, expected, "metadata in order, every type intact");
    assert_eq!(file.tensors().len(), TENSORS.len());
    for ((t, &(name, ty, dims)), bytes) in file.tensors().iter().zip(&TENSORS).zip(data) {
        assert_eq!((t.name.as_str(), t.ty, t.dims.as_slice()), (name, ty, dims));
        assert_eq!(t.offset % alignment, 0, "{name} aligned");
        assert!(t.offset >= file.data_offset());
        assert_eq!(file.tensor_bytes(t), bytes.as_slice(), "{name} data");
        assert_eq!(file.tensor(name), Some(t));
    }
}

#[test]
fn every_value_type_and_tensor_type_round_trips_at_alignment_32_and_64() {
    let mut rng = seeded_rng();
    for alignment in [32, 64] {
        let (w, data) = rich_writer(alignment, &mut rng);
        let slices: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let bytes = w.to_bytes(&slices).unwrap();
        let file = GgufFile::from_bytes(bytes).unwrap();
        check_rich_file(&file, alignment as usize, &data);
    }
}

#[test]
fn streamed_file_reads_back_through_the_map() {
    let mut rng = seeded_rng();
    let (w, data) = rich_writer(64, &mut rng);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamed.gguf");
    // Produce each tensor in uneven pieces, as `moetile synth` does.
    let written = w
        .write_file(&path, |i, sink| {
            for chunk in data[i].chunks(7) {
                sink.write_all(chunk)?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(written, std::fs::metadata(&path).unwrap().len());
    let file = GgufFile::open(&path).unwrap();
    check_rich_file(&file, 64, &data);
}

#[test]
fn a_file_in_a_shared_or_static_buffer_reads_like_one_in_a_vec() {
    let mut rng = seeded_rng();
    let (w, data) = rich_writer(64, &mut rng);
    let slices: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let bytes = w.to_bytes(&slices).unwrap();
    let shared: std::sync::Arc<[u8]> = bytes.clone().into();
    check_rich_file(&GgufFile::from_buffer(shared).unwrap(), 64, &data);
    let leaked: &'static [u8] = bytes.leak();
    let file = GgufFile::from_buffer(leaked).unwrap();
    check_rich_file(&file, 64, &data);
    // No copy: the tensors are views of the buffer passed in.
    let t = &file.tensors()[0];
    assert!(std::ptr::eq(
        file.tensor_bytes(t),
        &leaked[t.offset..t.offset + t.len]
    ));
}

#[test]
fn version_2_files_read_like_version_3() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    let mut bytes = w.to_bytes(&[]).unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
}

#[test]
fn default_alignment_is_32_and_not_written() {
    let mut w = GgufWriter::new();
    w.add_tensor("x", GgmlType::F32, &[3]).unwrap();
    w.add_tensor("y", GgmlType::F32, &[1]).unwrap();
    let file = GgufFile::from_bytes(w.to_bytes(&[&[1; 12], &[2; 4]]).unwrap()).unwrap();
    assert_eq!(file.alignment(), 32);
    assert!(file.get("general.alignment").is_none());
    let [x, y] = file.tensors() else {
        panic!("two tensors")
    };
    assert_eq!(
        y.offset - x.offset,
        32,
        "second tensor starts at the next multiple of 32"
    );
}

#[test]
fn integer_accessors_take_any_integer_type_whose_value_fits() {
    let mut w = GgufWriter::new();
    w.add_metadata("as_u64", 7u64).unwrap();
    w.add_metadata("as_i32", 9i32).unwrap();
    w.add_metadata("as_u8", 3u8).unwrap();
    w.add_metadata("negative", -1i64).unwrap();
    let file = GgufFile::from_bytes(w.to_bytes(&[]).unwrap()).unwrap();
    assert_eq!(file.get_u32("as_u64").unwrap(), 7);
    assert_eq!(file.get_u32("as_i32").unwrap(), 9);
    assert_eq!(file.get_u64("as_u8").unwrap(), 3);
    assert_eq!(file.get_i32("negative").unwrap(), -1);
    assert_eq!(file.get_u32_opt("absent").unwrap(), None);
    assert_eq!(file.get_u32_opt("as_u8").unwrap(), Some(3));
}

#[test]
fn typed_accessors_name_the_key_and_both_types() {
    let mut w = GgufWriter::new();
    w.add_metadata("tokens", Array::from(vec!["a".to_string()]))
        .unwrap();
    w.add_metadata("negative", -1i64).unwrap();
    w.add_metadata("big", u64::MAX).unwrap();
    let file = GgufFile::from_bytes(w.to_bytes(&[]).unwrap()).unwrap();

    let e = file.get_u32("missing.key").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey { .. }), "{e:?}");
    assert!(e.to_string().contains("`missing.key`"), "{e}");

    let e = file.get_i32_array("tokens").unwrap_err();
    assert!(matches!(e, GgufError::WrongType { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("`tokens`") && msg.contains("array of string") && msg.contains("array of i32"),
        "{msg}"
    );
    let e = file.get_str_opt("negative").unwrap_err();
    assert!(matches!(e, GgufError::WrongType { .. }), "{e:?}");
    assert!(e.to_string().contains("is i64, expected string"), "{e}");

    let e = file.get_u32("negative").unwrap_err();
    assert!(
        matches!(e, GgufError::IntegerOutOfRange { value: -1, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("`negative` = -1 does not fit in u32"),
        "{e}"
    );
    let e = file.get_i32("big").unwrap_err();
    assert!(matches!(e, GgufError::IntegerOutOfRange { .. }), "{e:?}");
    assert_eq!(file.get_u64("big").unwrap(), u64::MAX);
    assert_eq!(file.get("big").map(Value::value_type), Some(ValueType::U64));
}

#[test]
fn writer_refuses_a_callback_that_writes_too_few_or_too_many_bytes() {
    let mut w = GgufWriter::new();
    w.add_tensor("a", GgmlType::F32, &[2]).unwrap();
    w.add_tensor("blk.1.short", GgmlType::F16, &[4]).unwrap();
    let e = w
        .write_to(Vec::new(), |i, sink| {
            sink.write_all(&[0; 8][..if i == 0 { 8 } else { 7 }])
        })
        .unwrap_err();
    assert!(
        matches!(
            e,
            GgufError::TensorLength {
                expected: 8,
                written: 7,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("`blk.1.short`"), "{e}");

    let e = w
        .write_to(Vec::new(), |_, sink| sink.write_all(&[0; 9]))
        .unwrap_err();
    assert!(
        matches!(
            e,
            GgufError::TensorLength {
                expected: 8,
                written: 9,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("`a`"), "{e}");

    let e = w.to_bytes(&[&[0; 8]]).unwrap_err();
    assert!(
        matches!(
            e,
            GgufError::TensorCount {
                declared: 2,
                given: 1
            }
        ),
        "{e:?}"
    );
}

#[test]
fn failed_write_file_leaves_no_partial_file() {
    let mut w = GgufWriter::new();
    w.add_tensor("t", GgmlType::F32, &[4]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.gguf");
    let e = w
        .write_file(&path, |_, _| Err(std::io::Error::other("quantizer failed")))
        .unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("tensor `t`") && msg.contains("quantizer failed"),
        "{msg}"
    );
    assert!(!path.exists());
}

#[test]
fn writer_validates_declarations_like_the_reader() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", 1u32).unwrap();
    let e = w.add_metadata("k", 2u32).unwrap_err();
    assert!(
        matches!(&e, GgufError::DuplicateKey { key } if key == "k"),
        "{e:?}"
    );

    let e = w.add_metadata("general.alignment", 24u32).unwrap_err();
    assert!(matches!(e, GgufError::BadAlignment { value: 24 }), "{e:?}");
    let e = w.add_metadata("general.alignment", 64u64).unwrap_err();
    assert!(
        matches!(&e, GgufError::WrongType { key, .. } if key == "general.alignment"),
        "{e:?}"
    );
    assert!(e.to_string().contains("u64"), "{e}");

    let mut deep = Array::U8(vec![1]);
    for _ in 0..moetile::gguf::MAX_ARRAY_DEPTH {
        deep = Array::Array(vec![deep]);
    }
    let e = w.add_metadata("deep", deep).unwrap_err();
    assert!(
        matches!(&e, GgufError::ArrayTooDeep { key, .. } if key == "deep"),
        "{e:?}"
    );

    w.add_tensor("t", GgmlType::F32, &[4]).unwrap();
    let e = w.add_tensor("t", GgmlType::F32, &[4]).unwrap_err();
    assert!(
        matches!(&e, GgufError::DuplicateTensor { name } if name == "t"),
        "{e:?}"
    );
    let e = w.add_tensor("q", GgmlType::Q4_K, &[100, 2]).unwrap_err();
    assert!(
        matches!(e, GgufError::BlockMismatch { row_len: 100, .. }),
        "{e:?}"
    );
    let e = w.add_tensor("z", GgmlType::F32, &[4, 0]).unwrap_err();
    assert!(matches!(e, GgufError::ZeroDim { .. }), "{e:?}");
    let e = w.add_tensor("five", GgmlType::F32, &[1; 5]).unwrap_err();
    assert!(
        matches!(e, GgufError::TooManyDims { n_dims: 5, .. }),
        "{e:?}"
    );
}

#[test]
fn gguf_errors_convert_into_the_crate_error() {
    fn block_count(file: &GgufFile) -> moetile::Result<u32> {
        Ok(file.get_u32("qwen3moe.block_count")?)
    }
    let file = GgufFile::from_bytes(GgufWriter::new().to_bytes(&[]).unwrap()).unwrap();
    let e = block_count(&file).unwrap_err();
    assert!(
        matches!(e, moetile::Error::Gguf(GgufError::MissingKey { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("`qwen3moe.block_count`"), "{e}");
}
