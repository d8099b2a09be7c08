//! The CPU reference backend: every op of [`moetile::model::Backend`] as a plain loop, in f32
//! storage with f64 accumulation, so its only rounding is the f32 storage of each op's result.
//! It is the oracle the GPU kernels are tested against and what `moetile verify` compares with;
//! it is deliberately simple rather than fast.
//!
//! ```
//! use moetile::model::Backend;
//! use moetile_cpu::CpuBackend;
//!
//! let mut cpu = CpuBackend::new();
//! let mut x = cpu.act_from_host(1, 2, &[1.0, 2.0]).unwrap();
//! let y = cpu.act_from_host(1, 2, &[0.5, 0.5]).unwrap();
//! cpu.add(&mut x, &y).unwrap();
//! assert_eq!(cpu.read(&x).unwrap(), vec![1.5, 2.5]);
//! ```

#![deny(missing_docs)]

mod attention;
mod backend;
pub mod deepseek4;
mod delta_net;
mod ops;

pub use backend::{CpuBackend, CpuKvCache, CpuRouting, CpuWeight, Mat};
pub use ops::{Choice, int8_quantize, matmul, moe, rms_norm, rope, route};
