//! Progress bars on stderr. indicatif draws nothing when stderr is not a terminal, so scripted
//! runs and tests see only the results.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting bytes, with rate and time left (model loading, synthesis).
pub fn bytes_bar(label: &str, total: u64) -> ProgressBar {
    bar(
        label,
        total,
        "{msg:>9} [{bar:32}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    )
}

/// A bar counting tokens (long prefills).
pub fn tokens_bar(label: &str, total: u64) -> ProgressBar {
    bar(
        label,
        total,
        "{msg:>9} [{bar:32}] {pos}/{len} tokens ({per_sec}, {eta} left)",
    )
}

/// A bar counting `unit`s of a total set later (kernels compiled at load).
pub fn count_bar(label: &str, unit: &str) -> ProgressBar {
    bar(
        label,
        0,
        &format!("{{msg:>9}} [{{bar:32}}] {{pos}}/{{len}} {unit} ({{eta}} left)"),
    )
}

fn bar(label: &str, total: u64, template: &str) -> ProgressBar {
    // The templates above are constants that parse; a failure would only lose the styling.
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::new(total)
        .with_style(style)
        .with_message(label.to_string())
}
