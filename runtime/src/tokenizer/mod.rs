//! Tokenizers built from the GGUF's `tokenizer.ggml.*` metadata: byte-level BPE (pre-tokenizer
//! chosen by `tokenizer.ggml.pre`) and SentencePiece-style, with streaming UTF-8-safe decoding.
