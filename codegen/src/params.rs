//! Uniform parameter structs, shared by the host (`bytemuck` bytes) and the WGSL (a struct of
//! the same name and fields). A test checks every field offset and the size against naga's
//! layout of the WGSL struct, so the two cannot drift.

/// A `#[repr(C)]` params struct with a WGSL twin.
pub trait WgslParams: bytemuck::Pod {
    /// The WGSL struct name.
    const NAME: &'static str;
    /// `(field, byte offset)` in declaration order.
    fn fields() -> Vec<(&'static str, usize)>;
}

macro_rules! params {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl WgslParams for $name {
            const NAME: &'static str = stringify!($name);
            fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), std::mem::offset_of!($name, $field)),)*]
            }
        }
    };
}

params! {
    /// `map.wgsl`: routing ids `(T, K)` -> expert-major lists and the work list.
    MapParams {
        /// T * K.
        n_pairs: u32,
        /// E.
        n_experts: u32,
        /// `ceil(n_pairs / 256)`: chunks of pairs counted per workgroup.
        n_chunks: u32,
        /// Padding.
        _pad0: u32,
        /// The y extent (row tiles) of each indirect-dispatch slot; 0 for unused slots.
        row_groups: [u32; 4],
    }
}

params! {
    /// `mm_id.wgsl`, `mm_id_coop.wgsl`, `mv_id.wgsl`: `y[p] = W[e(p)] @ act[p / act_row_div]`.
    MatmulParams {
        /// Output rows per expert (F for gate/up, D for down).
        n_rows: u32,
        /// Input width (D for gate/up, F for down); a multiple of 32 and of the block size.
        n_cols: u32,
        /// Activation row of pair p is `p / act_row_div`: K when reading x (T, D), 1 when
        /// reading mid (T*K, F).
        act_row_div: u32,
        /// First expert held by the bound weight buffer.
        expert_base: u32,
        /// Experts held by the bound weight buffer (work outside it is skipped).
        expert_count: u32,
        /// Pairs (mat-vec only: its grid is one workgroup row per pair).
        n_pairs: u32,
        /// Padding.
        _pad0: u32,
        /// Padding.
        _pad1: u32,
    }
}

params! {
    /// `act.wgsl`: `mid = act(gate, up) * route_weight`.
    ActParams {
        /// T * K.
        n_pairs: u32,
        /// F (even).
        n_cols: u32,
        /// 1: clamp with `limit` (`silu(min(g, l)) * clamp(u, -l, l)`), 0: plain SwiGLU.
        clamp: u32,
        /// The clamp limit.
        limit: f32,
    }
}

params! {
    /// `sum.wgsl`: `out[t] = sum_k y[t * K + k]`.
    SumParams {
        /// T.
        n_tokens: u32,
        /// D.
        n_cols: u32,
        /// K.
        n_used: u32,
        /// Padding.
        _pad0: u32,
    }
}

/// The host layout of one params struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Struct name (the same in Rust and WGSL).
    pub name: &'static str,
    /// `(field, byte offset)` in declaration order.
    pub fields: Vec<(&'static str, usize)>,
    /// Size in bytes.
    pub size: usize,
}

/// The layout of every params struct, for the test against naga's view of the WGSL.
pub fn all() -> Vec<Layout> {
    fn layout<P: WgslParams>() -> Layout {
        Layout {
            name: P::NAME,
            fields: P::fields(),
            size: std::mem::size_of::<P>(),
        }
    }
    vec![
        layout::<MapParams>(),
        layout::<MatmulParams>(),
        layout::<ActParams>(),
        layout::<SumParams>(),
    ]
}
