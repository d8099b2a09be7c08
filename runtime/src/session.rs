//! Sessions: chunked prefill, token-by-token decode, the context limit and KV-cache reuse across
//! the turns of a chat.
