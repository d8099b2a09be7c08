//! Kernel keys and the WGSL they name: every GPU specialization moetile runs is generated here
//! from a [`KernelKey`] and validated by naga (SPIR-V, MSL, HLSL) at build time.
