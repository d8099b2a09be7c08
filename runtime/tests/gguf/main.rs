//! Tests of the GGUF reader and writer: round trips, corrupt files (each asserting the error
//! variant and that its message names the culprit), random corruption, and real files from
//! llama.cpp checked against gguf-py's reading of them.

mod corrupt;
mod fuzz;
mod raw;
mod real_files;
mod roundtrip;
