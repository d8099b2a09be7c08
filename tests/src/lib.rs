//! Cross-crate integration tests live in `tests/tests/`; shared fixture helpers live here.
