//! The CPU reference backend: every op of [`moetile::model::Backend`] as a plain loop, in f32
//! with f64 accumulation where rounding would otherwise dominate. It is the oracle the GPU
//! kernels are tested against and what `moetile verify` compares with; it is not meant to be
//! fast.
