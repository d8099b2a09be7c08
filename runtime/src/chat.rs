//! Chat templates: renders `tokenizer.chat_template` from the GGUF with minijinja, with a ChatML
//! fallback for files that carry none.
