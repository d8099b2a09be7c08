//! The wgpu backend: adapter discovery and selection, the capability profile, weight upload into
//! moetile's GPU layouts, the pipeline cache over generated kernels, and dispatch.
