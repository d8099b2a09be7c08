//! Hand-assembled GGUF bytes, so corrupt-file tests can write exactly the field they break.

/// GGUF bytes under construction; every method appends one field.
#[derive(Clone, Default)]
pub struct Raw(pub Vec<u8>);

/// Value type ids of the GGUF specification.
pub const T_U8: u32 = 0;
pub const T_U32: u32 = 4;
pub const T_BOOL: u32 = 7;
pub const T_STRING: u32 = 8;
pub const T_ARRAY: u32 = 9;
pub const T_U64: u32 = 10;

/// ggml type ids.
pub const F32: u32 = 0;
pub const Q4_K: u32 = 12;

impl Raw {
    /// Magic, version and the two counts.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        Raw(b"GGUF".to_vec()).u32(version).u64(n_tensors).u64(n_kv)
    }

    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    pub fn u8(self, v: u8) -> Self {
        self.bytes(&[v])
    }

    pub fn u32(self, v: u32) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// A GGUF string: u64 length, bytes.
    pub fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    /// A metadata entry holding a u32.
    pub fn kv_u32(self, key: &str, v: u32) -> Self {
        self.str(key).u32(T_U32).u32(v)
    }

    /// A tensor info: name, dims, type id, offset relative to the data section.
    pub fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }

    /// Zero padding up to a multiple of `alignment`, then `n` data bytes.
    pub fn data(mut self, alignment: usize, n: usize) -> Self {
        self.0.resize(self.0.len().next_multiple_of(alignment), 0);
        self.0.resize(self.0.len() + n, 0xAB);
        self
    }
}
