//! The legacy 32-value formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (ggml-common.h `block_q*`).
//!
//! All four 4/5-bit formats store value `j` of the block in the low nibble of `qs[j]` and value
//! `j + 16` in its high nibble; the 5-bit ones add bit `j` of `qh` as the fifth bit of value `j`.

use bytemuck::{Pod, Zeroable};

use crate::quant::block::{Block, F16Le, QK, Quantize};

/// Q4_0: `d * (q - 8)`, q in 0..16.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: F16Le,
    /// 4-bit codes, two per byte (see the module docs for the order).
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// Q4_1: `d * q + m`, q in 0..16.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: F16Le,
    /// Offset (the block minimum).
    pub m: F16Le,
    /// 4-bit codes, two per byte.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// Q5_0: `d * (q - 16)`, q in 0..32.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: F16Le,
    /// Fifth bits, bit `j` of this little-endian u32 for value `j`.
    pub qh: [u8; 4],
    /// Low 4 bits, two per byte.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// Q5_1: `d * q + m`, q in 0..32.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: F16Le,
    /// Offset (the block minimum).
    pub m: F16Le,
    /// Fifth bits, bit `j` of this little-endian u32 for value `j`.
    pub qh: [u8; 4],
    /// Low 4 bits, two per byte.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// Q8_0: `d * q`, q an i8.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: F16Le,
    /// Signed 8-bit codes.
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// The 32 four-bit codes of a legacy block in value order: low nibbles, then high nibbles.
/// IQ4_NL and IQ4_XS share this packing.
pub(crate) fn nibbles(qs: &[u8; QK / 2]) -> [u8; QK] {
    let mut q = [0; QK];
    for (j, &b) in qs.iter().enumerate() {
        q[j] = b & 0xf;
        q[j + QK / 2] = b >> 4;
    }
    q
}

/// The 32 five-bit codes of a Q5 block: the nibbles plus bit `j` of `qh` as bit 4 of value `j`.
fn five_bit_codes(qh: [u8; 4], qs: &[u8; QK / 2]) -> [u8; QK] {
    let high = u32::from_le_bytes(qh);
    let mut q = nibbles(qs);
    for (j, q) in q.iter_mut().enumerate() {
        *q |= (((high >> j) & 1) as u8) << 4;
    }
    q
}

impl Block for BlockQ4_0 {
    const VALUES: usize = QK;

    /// Mirrors `dequantize_row_q4_0` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, q) in out.iter_mut().zip(nibbles(&self.qs)) {
            *o = (i32::from(q) - 8) as f32 * d;
        }
    }
}

impl Block for BlockQ4_1 {
    const VALUES: usize = QK;

    /// Mirrors `dequantize_row_q4_1` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (o, q) in out.iter_mut().zip(nibbles(&self.qs)) {
            *o = f32::from(q) * d + m;
        }
    }
}

impl Block for BlockQ5_0 {
    const VALUES: usize = QK;

    /// Mirrors `dequantize_row_q5_0` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, q) in out.iter_mut().zip(five_bit_codes(self.qh, &self.qs)) {
            *o = (i32::from(q) - 16) as f32 * d;
        }
    }
}

impl Block for BlockQ5_1 {
    const VALUES: usize = QK;

    /// Mirrors `dequantize_row_q5_1` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (o, q) in out.iter_mut().zip(five_bit_codes(self.qh, &self.qs)) {
            *o = f32::from(q) * d + m;
        }
    }
}

impl Block for BlockQ8_0 {
    const VALUES: usize = QK;

    /// Mirrors `dequantize_row_q8_0` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

impl Quantize for BlockQ8_0 {
    /// Mirrors `quantize_row_q8_0_ref` in ggml-quants.c bit for bit (also gguf-py's
    /// `Q8_0.quantize_blocks`): `d = max|x| / 127`, `q = round(x / d)` with ties away from zero.
    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0; QK];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        Self {
            d: F16Le::from_f32(d),
            qs,
        }
    }
}
