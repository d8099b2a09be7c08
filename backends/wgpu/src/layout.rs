//! moetile's GPU layout of weights, and their upload.
//!
//! Blocks are the GGUF blocks, word-aligned: a type whose block is not a multiple of 4 bytes
//! gets zero bytes up to the next multiple inserted at one fixed offset ([`WeightType::pad_at`]:
//! `Q4_0` 18 -> 20 B, `Q5_0` 22 -> 24 B, `Q8_0` 34 -> 36 B and `IQ2_XXS` 66 -> 68 B after the f16
//! scale, `MXFP4` 17 -> 20 B after the exponent byte, `Q3_K` 110 -> 112 B and `Q6_K`
//! 210 -> 212 B at the end), so every field a kernel reads is in whole `u32` words, f16 scales
//! sit in a word's low half (`unpack2x16float`, no `SHADER_F16`) and MXFP4's exponent in a
//! word's low byte.
//! The other types, and the float types (read as 32-value blocks), are copied unchanged. The
//! per-field layout of each block is documented at the top of its `wgsl/dequant/*.wgsl`
//! fragment.
//!
//! Order: expert-major, then row-major, then block: block `b` of row `r` of expert `e` is GPU
//! block `(e * rows + r) * cols / QK + b`. A tensor larger than the device's storage binding
//! limit is split by experts into several buffers ([`ExpertTensor::chunks`]); a matmul runs once
//! per chunk and each workgroup skips work for experts outside its chunk. A dense (2-D) tensor
//! that large (an output head or embedding table of a big vocabulary) is first cut into
//! [`ExpertTensor::slices`] experts of whole rows, so the same split applies: its matmul routes
//! every token to every slice, and `(T * slices, rows / slices)` pair rows are the `(T, rows)`
//! output row-major.
//!
//! The IQ2_XXS grid (256 x 8 magnitudes, `moetile::quant::IQ2XXS_GRID`) is one storage buffer
//! per context, read by the dequant fragment as `array<vec2<u32>, 256>`.

use moetile::model::WeightData;
use moetile::quant::GgmlType;
use moetile_codegen::WeightType;

use crate::error::{Result, WgpuError};

/// The GGUF tensor type of each GPU weight type: where the generator's [`WeightType`] (which
/// knows nothing of the runtime) meets the runtime's [`GgmlType`].
pub trait GgmlWeight: Sized {
    /// The GGUF tensor type.
    fn ggml(self) -> GgmlType;
    /// The GPU type for a GGUF tensor type, if the kernels read it.
    fn from_ggml(ty: GgmlType) -> Option<Self>;
}

impl GgmlWeight for WeightType {
    fn ggml(self) -> GgmlType {
        match self {
            WeightType::F32 => GgmlType::F32,
            WeightType::F16 => GgmlType::F16,
            WeightType::BF16 => GgmlType::BF16,
            WeightType::Q4_0 => GgmlType::Q4_0,
            WeightType::Q4_1 => GgmlType::Q4_1,
            WeightType::Q5_0 => GgmlType::Q5_0,
            WeightType::Q5_1 => GgmlType::Q5_1,
            WeightType::Q8_0 => GgmlType::Q8_0,
            WeightType::Q2_K => GgmlType::Q2_K,
            WeightType::Q3_K => GgmlType::Q3_K,
            WeightType::Q4_K => GgmlType::Q4_K,
            WeightType::Q5_K => GgmlType::Q5_K,
            WeightType::Q6_K => GgmlType::Q6_K,
            WeightType::IQ2_XXS => GgmlType::IQ2_XXS,
            WeightType::MXFP4 => GgmlType::MXFP4,
        }
    }

    fn from_ggml(ty: GgmlType) -> Option<WeightType> {
        WeightType::ALL.into_iter().find(|w| w.ggml() == ty)
    }
}

/// Appends the GPU layout of `gguf` (whole blocks of `ty`) to `out`.
pub fn repack(ty: WeightType, gguf: &[u8], out: &mut Vec<u8>) {
    match ty.pad_at() {
        None => out.extend_from_slice(gguf),
        Some(at) => {
            let at = at as usize;
            let pad = (ty.gpu_block_bytes() - ty.gguf_block_bytes()) as usize;
            for block in gguf.chunks_exact(ty.gguf_block_bytes() as usize) {
                out.extend_from_slice(&block[..at]);
                out.resize(out.len() + pad, 0);
                out.extend_from_slice(&block[at..]);
            }
        }
    }
}

/// Where an upload's GGUF rows come from: one tensor, or two of the same type and shape
/// interleaved row by row (gate and up: row `2i` of each expert is gate row `i`, row `2i + 1`
/// up row `i`), so the merged tensor is never built on the host.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// The tensor's own bytes.
    One(&'a [u8]),
    /// Even rows from the first, odd rows from the second.
    Interleaved(&'a [u8], &'a [u8]),
}

impl<'a> Rows<'a> {
    /// GGUF row `r` (of `row_bytes` bytes), counted over the whole tensor.
    fn row(self, r: usize, row_bytes: usize) -> &'a [u8] {
        let (src, i) = match self {
            Rows::One(bytes) => (bytes, r),
            Rows::Interleaved(even, odd) => (if r.is_multiple_of(2) { even } else { odd }, r / 2),
        };
        &src[i * row_bytes..(i + 1) * row_bytes]
    }
}

/// Rows repacked into a host scratch buffer (reused, so it stays in cache) before each copy
/// into the mapped GPU buffer.
const ROWS_PER_COPY: usize = 256;

/// One buffer of an [`ExpertTensor`]: experts `expert_base .. expert_base + expert_count`.
#[derive(Debug)]
pub struct WeightChunk {
    /// The GPU blocks.
    pub buffer: wgpu::Buffer,
    /// First expert held.
    pub expert_base: u32,
    /// Experts held.
    pub expert_count: u32,
}

/// An expert weight tensor `[cols, rows, experts]` in the GPU layout.
#[derive(Debug)]
pub struct ExpertTensor {
    /// Tensor name.
    pub name: String,
    /// Storage type.
    pub weight: WeightType,
    /// Input width (the row length).
    pub cols: usize,
    /// Output rows per expert.
    pub rows: usize,
    /// Experts.
    pub experts: usize,
    /// 1, or for a dense tensor too large for one binding the number of experts its rows were
    /// cut into (then `experts == slices` and the tensor has `rows * slices` rows).
    pub slices: usize,
    /// The buffers, by ascending expert.
    pub chunks: Vec<WeightChunk>,
}

impl ExpertTensor {
    /// Rows of the whole tensor: of one expert, or of a dense tensor however it is sliced.
    pub fn dense_rows(&self) -> usize {
        self.rows * self.slices
    }

    /// This dense tensor's rows as `groups` equal slices of consecutive rows, each an expert
    /// (the block-diagonal weight of `Backend::grouped_matmul`): the same buffers, since an
    /// expert's rows follow the one before's in the layout whatever the upload cut. `None`
    /// unless the rows divide into the groups and every buffer holds whole groups.
    pub(crate) fn groups(&self, groups: usize) -> Option<ExpertTensor> {
        let rows = self.dense_rows();
        if self.experts != self.slices || groups == 0 || !rows.is_multiple_of(groups) {
            return None;
        }
        let rank = rows / groups;
        let chunks = self
            .chunks
            .iter()
            .map(|c| {
                let (first, n) = (
                    c.expert_base as usize * self.rows,
                    c.expert_count as usize * self.rows,
                );
                (first.is_multiple_of(rank) && n.is_multiple_of(rank)).then(|| WeightChunk {
                    buffer: c.buffer.clone(),
                    expert_base: (first / rank) as u32,
                    expert_count: (n / rank) as u32,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ExpertTensor {
            name: self.name.clone(),
            weight: self.weight,
            cols: self.cols,
            rows: rank,
            experts: groups,
            slices: groups,
            chunks,
        })
    }
}

/// Shape and type checks of a tensor about to be uploaded: `(type, cols, rows, experts)`.
fn check(w: &WeightData<'_>) -> Result<(WeightType, usize, usize, usize)> {
    let ty = WeightType::from_ggml(w.ty).ok_or_else(|| WgpuError::UnsupportedWeight {
        tensor: w.name.to_string(),
        ty: w.ty,
    })?;
    let shape_error = |detail: String| WgpuError::Shape {
        op: w.name.to_string(),
        detail,
    };
    let (cols, rows, experts) = match *w.dims {
        [c] => (c, 1, 1),
        [c, r] => (c, r, 1),
        [c, r, e] => (c, r, e),
        _ => {
            return Err(shape_error(format!(
                "dims {:?} are not [cols, rows, experts]",
                w.dims
            )));
        }
    };
    if cols % ty.block_values() as usize != 0 {
        return Err(shape_error(format!(
            "rows of {cols} values are not whole {}-value blocks of {ty}",
            ty.block_values()
        )));
    }
    let expected =
        experts * rows * (cols / ty.block_values() as usize) * ty.gguf_block_bytes() as usize;
    if w.bytes.len() != expected {
        return Err(shape_error(format!(
            "{} bytes for {experts} x {rows} x {cols} {ty} values, expected {expected}",
            w.bytes.len()
        )));
    }
    Ok((ty, cols, rows, experts))
}

/// Uploads `w` into buffers of at most `max_binding` bytes, split by experts.
pub(crate) fn upload(
    device: &wgpu::Device,
    w: &WeightData<'_>,
    max_binding: u64,
) -> Result<ExpertTensor> {
    let shape = check(w)?;
    let sliceable = w.dims.len() == 2;
    upload_rows(
        device,
        w.name,
        shape,
        Rows::One(w.bytes),
        sliceable,
        max_binding,
    )
}

/// Whether gate and up expert tensors of these types and dims become one tensor of
/// interleaved rows ([`upload_interleaved`]): the rule `crate::tune` also reads a model's
/// matmuls by.
pub(crate) fn interleaves(
    gate_ty: GgmlType,
    gate_dims: &[usize],
    up_ty: GgmlType,
    up_dims: &[usize],
) -> bool {
    gate_ty == up_ty && gate_dims == up_dims && gate_dims.len() == 3
}

/// Gate and up expert tensors `[cols, rows, experts]` of the same type and shape as one
/// `[cols, 2 * rows, experts]` tensor whose row `2i` of each expert is gate row `i` and row
/// `2i + 1` up row `i`, interleaved as they are repacked. `None` when they differ in type or
/// shape (or are not 3-D expert tensors), and they stay separate.
pub(crate) fn upload_interleaved(
    device: &wgpu::Device,
    gate: &WeightData<'_>,
    up: &WeightData<'_>,
    max_binding: u64,
) -> Result<Option<ExpertTensor>> {
    if !interleaves(gate.ty, gate.dims, up.ty, up.dims) {
        return Ok(None);
    }
    let (ty, cols, rows, experts) = check(gate)?;
    check(up)?;
    let name = format!("{}+{}", gate.name, up.name);
    let shape = (ty, cols, 2 * rows, experts);
    let rows = Rows::Interleaved(gate.bytes, up.bytes);
    upload_rows(device, &name, shape, rows, false, max_binding).map(Some)
}

/// Uploads the GGUF rows of a checked tensor `(type, cols, rows, experts)` named `name`; a
/// `sliceable` (2-D, dense) one too large for one binding is cut into slices of rows.
fn upload_rows(
    device: &wgpu::Device,
    name: &str,
    (ty, cols, rows, experts): (WeightType, usize, usize, usize),
    source: Rows<'_>,
    sliceable: bool,
    max_binding: u64,
) -> Result<ExpertTensor> {
    let gpu_row = (cols / ty.block_values() as usize * ty.gpu_block_bytes() as usize) as u64;
    let slices = if sliceable {
        slices_to_fit(rows, gpu_row, max_binding).ok_or_else(|| WgpuError::ExpertTooLarge {
            tensor: name.to_string(),
            bytes: rows as u64 * gpu_row,
            limit: max_binding,
        })?
    } else {
        1
    };
    let (rows, experts) = (rows / slices, experts * slices);
    let gguf_row = cols / ty.block_values() as usize * ty.gguf_block_bytes() as usize;
    let gpu_expert = rows as u64 * gpu_row;
    let per_chunk = (max_binding / gpu_expert) as usize;
    if per_chunk == 0 {
        return Err(WgpuError::ExpertTooLarge {
            tensor: name.to_string(),
            bytes: gpu_expert,
            limit: max_binding,
        });
    }
    let mut chunks = Vec::new();
    let mut scratch = Vec::with_capacity(ROWS_PER_COPY * gpu_row as usize);
    for base in (0..experts).step_by(per_chunk) {
        let count = per_chunk.min(experts - base);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("{name} experts {base}..{}", base + count)),
            size: count as u64 * gpu_expert,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: true,
        });
        // Repacked a few rows at a time into the mapped buffer: the tensor is never copied
        // whole on the host (fresh allocations that size cost a page fault every 4 KiB).
        let mut mapped = buffer
            .get_mapped_range_mut(..)
            .map_err(|e| WgpuError::Gpu {
                op: format!("uploading {name}"),
                message: e.to_string(),
            })?;
        let (first, end) = (base * rows, (base + count) * rows);
        let mut at = 0;
        for r0 in (first..end).step_by(ROWS_PER_COPY) {
            scratch.clear();
            for r in r0..end.min(r0 + ROWS_PER_COPY) {
                repack(ty, source.row(r, gguf_row), &mut scratch);
            }
            mapped
                .slice(at..at + scratch.len())
                .copy_from_slice(&scratch);
            at += scratch.len();
        }
        drop(mapped);
        buffer.unmap();
        chunks.push(WeightChunk {
            buffer,
            expert_base: base as u32,
            expert_count: count as u32,
        });
    }
    Ok(ExpertTensor {
        name: name.to_string(),
        weight: ty,
        cols,
        rows,
        experts,
        slices,
        chunks,
    })
}

/// The fewest slices of whole rows, dividing `rows` evenly, of which one fits `max_binding`
/// (1 when the tensor does); `None` when that takes more than [`MAX_SLICES`].
fn slices_to_fit(rows: usize, row_bytes: u64, max_binding: u64) -> Option<usize> {
    let rows_per_binding = (max_binding / row_bytes.max(1)) as usize;
    (1..=MAX_SLICES).find(|k| rows.is_multiple_of(*k) && rows / k <= rows_per_binding)
}

/// Most slices of a dense tensor: each token becomes this many routed pairs of its matmul, so
/// a tensor needing more (a 2 GiB head on a 128 MiB binding limit is 16) is refused instead.
const MAX_SLICES: usize = 64;

/// A vector of any length as a one-row F32 tensor: norm weights and biases (read as plain
/// `array<f32>`), and the few 1-D weights used as a matmul row (whose kernels then check that
/// the length is whole 32-value blocks).
pub(crate) fn upload_vector(device: &wgpu::Device, name: &str, values: &[f32]) -> ExpertTensor {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(name),
        size: (values.len() as u64 * 4).max(4),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: true,
    });
    if !values.is_empty() {
        buffer
            .get_mapped_range_mut(..)
            .expect("a buffer mapped at creation is mapped")
            .copy_from_slice(bytemuck::cast_slice(values));
    }
    buffer.unmap();
    ExpertTensor {
        name: name.to_string(),
        weight: WeightType::F32,
        cols: values.len(),
        rows: 1,
        experts: 1,
        slices: 1,
        chunks: vec![WeightChunk {
            buffer,
            expert_base: 0,
            expert_count: 1,
        }],
    }
}

/// The IQ2_XXS grid as the dequant fragment reads it.
pub(crate) fn iq2xxs_grid_bytes() -> Vec<u8> {
    moetile::quant::IQ2XXS_GRID
        .iter()
        .flat_map(|g| g.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_types_agree_with_ggml_block_geometry() {
        for w in WeightType::ALL {
            let g = w.ggml();
            assert_eq!(WeightType::from_ggml(g), Some(w));
            assert_eq!(w.name(), g.name(), "{w}");
            // A GPU block is one GGUF block, or 32 scalars for the float types.
            let scalars_per_block = w.block_values() as usize / g.block_values();
            assert_eq!(
                w.gguf_block_bytes() as usize,
                scalars_per_block * g.block_bytes(),
                "{w}"
            );
        }
        assert_eq!(WeightType::from_ggml(GgmlType::IQ4_XS), None);
    }

    #[test]
    fn repack_inserts_pad_at_the_documented_offset() {
        let block: Vec<u8> = (0..34).collect();
        let mut out = Vec::new();
        repack(WeightType::Q8_0, &[block.clone(), block].concat(), &mut out);
        assert_eq!(out.len(), 72);
        assert_eq!(&out[..4], &[0, 1, 0, 0]);
        assert_eq!(&out[4..36], &(2..34).collect::<Vec<u8>>()[..]);
        assert_eq!(&out[36..40], &[0, 1, 0, 0]);

        let q6: Vec<u8> = (0..210).map(|i| i as u8).collect();
        let mut out = Vec::new();
        repack(WeightType::Q6_K, &q6, &mut out);
        assert_eq!(out.len(), 212);
        assert_eq!(&out[..210], &q6[..]);
        assert_eq!(&out[210..], &[0, 0]);

        let mx: Vec<u8> = (1..=34).collect();
        let mut out = Vec::new();
        repack(WeightType::MXFP4, &mx, &mut out);
        assert_eq!(out.len(), 40);
        assert_eq!(&out[..4], &[1, 0, 0, 0]);
        assert_eq!(&out[4..20], &mx[1..17]);
        assert_eq!(&out[20..24], &[18, 0, 0, 0]);
        assert_eq!(&out[24..], &mx[18..]);

        let q4: Vec<u8> = (0..144).map(|i| i as u8).collect();
        let mut out = Vec::new();
        repack(WeightType::Q4_K, &q4, &mut out);
        assert_eq!(out, q4);
    }

    #[test]
    fn slices_are_the_fewest_equal_ones_that_fit() {
        // 100 rows of 10 bytes.
        assert_eq!(slices_to_fit(100, 10, 1000), Some(1));
        assert_eq!(slices_to_fit(100, 10, 999), Some(2));
        // 3 does not divide 100: 4 slices of 25 rows.
        assert_eq!(slices_to_fit(100, 10, 340), Some(4));
        // A prime row count fits only one row per slice: refused past MAX_SLICES.
        assert_eq!(slices_to_fit(61, 10, 10), Some(61));
        assert_eq!(slices_to_fit(67, 10, 10), None);
        // Not even one row fits.
        assert_eq!(slices_to_fit(100, 10, 9), None);
    }
}
