//! An application that owns a wgpu device, runs its own compute pass, then a moetile model on
//! the same device and queue.

fn main() {}
