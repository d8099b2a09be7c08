//! The `moetile` binary.

fn main() {}
