//! The crate's error type: every message names the culprit and, where there is one, the fix.

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting (config field, environment variable, flag) has a value outside its domain.
    #[error("invalid {name} = {value:?}: {expected}")]
    InvalidSetting {
        /// Where the value came from, e.g. `MOETILE_TILE_MAX`.
        name: String,
        /// The value as given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
}
