//! GGUF files (versions 2 and 3): a validating reader over a memory map and a writer.
