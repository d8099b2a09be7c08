//! The weight types the GPU kernels read, and the GPU block layout of each.
//!
//! The GPU layout is ours: every GGUF block is copied unchanged except that blocks whose size is
//! not a multiple of 4 bytes get zero pad bytes (up to the next multiple of 4) inserted at one
//! fixed offset, so every field a kernel reads as a `u32` word is word-aligned (`Q4_0` 18 -> 20 B,
//! `Q5_0` 22 -> 24 B, `Q8_0` 34 -> 36 B, `IQ2_XXS` 66 -> 68 B after the f16 scale; `MXFP4`
//! 17 -> 20 B after the exponent byte; `Q3_K` 110 -> 112 B and `Q6_K` 210 -> 212 B at the end;
//! the others are already aligned). The plain float types are read as 32-value blocks. Rows are
//! whole blocks, experts are whole rows, so expert `e`, row `r`, block `b` is GPU block
//! `(e * rows + r) * blocks_per_row + b`. The repacking itself lives in `moetile-wgpu`
//! (`layout.rs`); the numbers below are the single source both it and the WGSL use (the
//! generator writes `QK` and `BLOCK_WORDS` into every shader that reads weights).
//!
//! Adding a type (`Q4_0`, `Q5_1`, `Q3_K`...) is one row in [`FORMATS`] plus one
//! `wgsl/dequant/<type>.wgsl` fragment defining `WRaw`, `wload`, `wdecode` and `dequant8` (the
//! contract is at the top of `wgsl/dequant/q8_0.wgsl`), optionally a `wgsl/dot/<type>.wgsl`
//! fragment for the int8 mat-vec ([`WeightType::int8_dot_fragments`]), and its GGUF tensor type in
//! `moetile-wgpu`'s `layout::GgmlWeight` (this crate does not depend on the runtime), whose test
//! checks the block sizes below against the runtime's block table.

/// A weight storage type with a GPU dequantization fragment.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightType {
    /// IEEE single floats (read as 32-value blocks of 32 words).
    F32,
    /// IEEE half floats (read as 32-value blocks of 16 words).
    F16,
    /// bfloat16, the top half of an f32 (read as 32-value blocks of 16 words).
    BF16,
    /// 32 4-bit values with an f16 scale, offset 8.
    Q4_0,
    /// 32 4-bit values with an f16 scale and min.
    Q4_1,
    /// 32 5-bit values with an f16 scale, offset 16.
    Q5_0,
    /// 32 5-bit values with an f16 scale and min.
    Q5_1,
    /// 32 int8 values with an f16 scale.
    Q8_0,
    /// 2-bit k-quant.
    Q2_K,
    /// 3-bit k-quant.
    Q3_K,
    /// 4-bit k-quant.
    Q4_K,
    /// 5-bit k-quant.
    Q5_K,
    /// 6-bit k-quant.
    Q6_K,
    /// 2.06-bit "i-quant" over a 256-entry grid of 8 magnitudes.
    IQ2_XXS,
    /// 32 FP4 E2M1 values with a shared power-of-two (E8M0) scale.
    MXFP4,
}

/// One row of the format table.
struct Format {
    ty: WeightType,
    /// The GGUF name (`Q4_K`).
    name: &'static str,
    /// Short lowercase name used in kernel names (`mm_id_q4k_...`).
    short: &'static str,
    /// Values per GPU block (a GGUF block, or 32 values for the float types).
    block_values: u32,
    /// Bytes of those values in the GGUF file.
    gguf_bytes: u32,
    /// Byte offset where zero bytes are inserted to make the block word-aligned.
    pad_at: Option<u32>,
    /// Fragments (under `wgsl/`) defining `wload`, `wdecode` and `dequant8`, in inclusion order.
    fragments: &'static [&'static str],
}

const FORMATS: [Format; 15] = [
    Format {
        ty: WeightType::F32,
        name: "F32",
        short: "f32",
        block_values: 32,
        gguf_bytes: 128,
        pad_at: None,
        fragments: &["dequant/f32.wgsl", "dequant/direct.wgsl"],
    },
    Format {
        ty: WeightType::F16,
        name: "F16",
        short: "f16",
        block_values: 32,
        gguf_bytes: 64,
        pad_at: None,
        fragments: &["dequant/f16.wgsl"],
    },
    Format {
        ty: WeightType::BF16,
        name: "BF16",
        short: "bf16",
        block_values: 32,
        gguf_bytes: 64,
        pad_at: None,
        fragments: &["dequant/bf16.wgsl", "dequant/direct.wgsl"],
    },
    Format {
        ty: WeightType::Q4_0,
        name: "Q4_0",
        short: "q4_0",
        block_values: 32,
        gguf_bytes: 18,
        // after the f16 scale `d`
        pad_at: Some(2),
        fragments: &[
            "dequant/legacy.wgsl",
            "dequant/q4_0.wgsl",
            "dequant/direct.wgsl",
        ],
    },
    Format {
        ty: WeightType::Q4_1,
        name: "Q4_1",
        short: "q4_1",
        block_values: 32,
        gguf_bytes: 20,
        pad_at: None,
        fragments: &[
            "dequant/legacy.wgsl",
            "dequant/q4_1.wgsl",
            "dequant/direct.wgsl",
        ],
    },
    Format {
        ty: WeightType::Q5_0,
        name: "Q5_0",
        short: "q5_0",
        block_values: 32,
        gguf_bytes: 22,
        // after the f16 scale `d`
        pad_at: Some(2),
        fragments: &[
            "dequant/legacy.wgsl",
            "dequant/q5_0.wgsl",
            "dequant/direct.wgsl",
        ],
    },
    Format {
        ty: WeightType::Q5_1,
        name: "Q5_1",
        short: "q5_1",
        block_values: 32,
        gguf_bytes: 24,
        pad_at: None,
        fragments: &[
            "dequant/legacy.wgsl",
            "dequant/q5_1.wgsl",
            "dequant/direct.wgsl",
        ],
    },
    Format {
        ty: WeightType::Q8_0,
        name: "Q8_0",
        short: "q8_0",
        block_values: 32,
        gguf_bytes: 34,
        // after the f16 scale `d`
        pad_at: Some(2),
        fragments: &["dequant/q8_0.wgsl"],
    },
    Format {
        ty: WeightType::Q2_K,
        name: "Q2_K",
        short: "q2k",
        block_values: 256,
        gguf_bytes: 84,
        pad_at: None,
        fragments: &["dequant/q2_k.wgsl"],
    },
    Format {
        ty: WeightType::Q3_K,
        name: "Q3_K",
        short: "q3k",
        block_values: 256,
        gguf_bytes: 110,
        // after the trailing f16 scale `d`
        pad_at: Some(110),
        fragments: &[
            "dequant/bytes.wgsl",
            "dequant/q3_k.wgsl",
            "dequant/direct.wgsl",
        ],
    },
    Format {
        ty: WeightType::Q4_K,
        name: "Q4_K",
        short: "q4k",
        block_values: 256,
        gguf_bytes: 144,
        pad_at: None,
        fragments: &[
            "dequant/bytes.wgsl",
            "dequant/scale_min_k4.wgsl",
            "dequant/q4_k.wgsl",
        ],
    },
    Format {
        ty: WeightType::Q5_K,
        name: "Q5_K",
        short: "q5k",
        block_values: 256,
        gguf_bytes: 176,
        pad_at: None,
        fragments: &[
            "dequant/bytes.wgsl",
            "dequant/scale_min_k4.wgsl",
            "dequant/q5_k.wgsl",
        ],
    },
    Format {
        ty: WeightType::Q6_K,
        name: "Q6_K",
        short: "q6k",
        block_values: 256,
        gguf_bytes: 210,
        // after the trailing f16 scale `d`
        pad_at: Some(210),
        fragments: &["dequant/bytes.wgsl", "dequant/q6_k.wgsl"],
    },
    Format {
        ty: WeightType::IQ2_XXS,
        name: "IQ2_XXS",
        short: "iq2xxs",
        block_values: 256,
        gguf_bytes: 66,
        // after the f16 scale `d`
        pad_at: Some(2),
        fragments: &["dequant/iq2_xxs.wgsl"],
    },
    Format {
        ty: WeightType::MXFP4,
        name: "MXFP4",
        short: "mxfp4",
        block_values: 32,
        gguf_bytes: 17,
        // after the exponent byte `e`: 3 bytes, so the 16 code bytes are 4 whole words
        pad_at: Some(1),
        fragments: &["dequant/mxfp4.wgsl"],
    },
];

impl WeightType {
    /// Every type, in table order.
    pub const ALL: [WeightType; 15] = [
        WeightType::F32,
        WeightType::F16,
        WeightType::BF16,
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q5_1,
        WeightType::Q8_0,
        WeightType::Q2_K,
        WeightType::Q3_K,
        WeightType::Q4_K,
        WeightType::Q5_K,
        WeightType::Q6_K,
        WeightType::IQ2_XXS,
        WeightType::MXFP4,
    ];

    fn format(self) -> &'static Format {
        FORMATS
            .iter()
            .find(|f| f.ty == self)
            .expect("every WeightType has a row in FORMATS")
    }

    /// Parses a short name (`q4k`) or a GGUF name (`Q4_K`), case-insensitively.
    pub fn parse(name: &str) -> Option<WeightType> {
        let name = name.trim();
        FORMATS
            .iter()
            .find(|f| f.short.eq_ignore_ascii_case(name) || f.name.eq_ignore_ascii_case(name))
            .map(|f| f.ty)
    }

    /// The GGUF name (`Q4_K`), as `moetile::quant::GgmlType` spells it.
    pub fn name(self) -> &'static str {
        self.format().name
    }

    /// Short lowercase name used in kernel names.
    pub fn short_name(self) -> &'static str {
        self.format().short
    }

    /// Values per GPU block: the row length must be a multiple of it.
    pub fn block_values(self) -> u32 {
        self.format().block_values
    }

    /// Bytes of one block as the GGUF stores it.
    pub fn gguf_block_bytes(self) -> u32 {
        self.format().gguf_bytes
    }

    /// Bytes of one block in the GPU layout (a multiple of 4).
    pub fn gpu_block_bytes(self) -> u32 {
        self.format().gguf_bytes.next_multiple_of(4)
    }

    /// `u32` words of one GPU block (the `BLOCK_WORDS` shader constant).
    pub fn block_words(self) -> u32 {
        self.gpu_block_bytes() / 4
    }

    /// Where the GPU layout inserts its pad bytes (`None` when the GGUF block is aligned).
    pub fn pad_at(self) -> Option<u32> {
        self.format().pad_at
    }

    /// Whether the dequant fragment reads the IQ2_XXS grid table (a storage buffer).
    pub fn uses_grid(self) -> bool {
        self == WeightType::IQ2_XXS
    }

    /// The fragments defining `wload`, `wdecode` and `dequant8`, in inclusion order.
    pub fn fragments(self) -> &'static [&'static str] {
        self.format().fragments
    }

    /// The fragments multiplying this type's blocks in their integer form with int8
    /// activations (`QSTEP`, `wdot`; the contract is in `wgsl/dot/q8_0.wgsl`), in inclusion
    /// order, for the types decode reads most; the others' mat-vecs take f32 activations.
    pub fn int8_dot_fragments(self) -> Option<&'static [&'static str]> {
        match self {
            WeightType::Q8_0 => Some(&["dot/q8_0.wgsl"]),
            WeightType::Q2_K => Some(&["dot/quarter.wgsl", "dot/q2_k.wgsl"]),
            WeightType::Q4_K => Some(&["dot/q4_k.wgsl"]),
            WeightType::Q6_K => Some(&["dot/quarter.wgsl", "dot/q6_k.wgsl"]),
            WeightType::IQ2_XXS => Some(&["dot/iq2_xxs.wgsl"]),
            _ => None,
        }
    }

    /// Whether a mat-vec over this type reads int8 activations when they are `requested`: only
    /// the types with [`WeightType::int8_dot_fragments`] do; the others stay on f32. The one
    /// rule for the key the runtime dispatches and the keys it compiles ahead.
    pub fn mat_vec_int8(self, requested: bool) -> bool {
        requested && self.int8_dot_fragments().is_some()
    }
}

impl std::fmt::Display for WeightType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_blocks_are_word_aligned_and_padded_only_when_needed() {
        for w in WeightType::ALL {
            assert_eq!(w.gpu_block_bytes() % 4, 0, "{w}");
            assert_eq!(
                w.pad_at().is_some(),
                w.gguf_block_bytes() % 4 != 0,
                "{w}: pad exactly the unaligned blocks"
            );
            assert_eq!(w.block_values() % 32, 0, "{w}: kernels step K by 32");
            assert_eq!(WeightType::parse(w.name()), Some(w));
            assert_eq!(WeightType::parse(w.short_name()), Some(w));
        }
        assert_eq!(WeightType::Q8_0.gpu_block_bytes(), 36);
        assert_eq!(WeightType::IQ2_XXS.gpu_block_bytes(), 68);
        assert_eq!(WeightType::Q6_K.gpu_block_bytes(), 212);
        assert_eq!(WeightType::Q4_0.gpu_block_bytes(), 20);
        assert_eq!(WeightType::Q5_0.gpu_block_bytes(), 24);
        assert_eq!(WeightType::Q3_K.gpu_block_bytes(), 112);
        assert_eq!(WeightType::MXFP4.gpu_block_bytes(), 20);
        assert_eq!(WeightType::parse("mxfp4"), Some(WeightType::MXFP4));
        assert_eq!(WeightType::parse("q4k"), Some(WeightType::Q4_K));
        assert_eq!(WeightType::parse("IQ2_XXS"), Some(WeightType::IQ2_XXS));
        assert_eq!(WeightType::parse("q5_1"), Some(WeightType::Q5_1));
        assert_eq!(WeightType::parse("iq4_xs"), None);
    }
}
