//! Sampling from logits: greedy, temperature, top-k, top-p, min-p, repetition and presence
//! penalties, seeded so the same seed gives the same tokens on the same backend.
