//! Configuration: TOML as written (`file`), validation with precise locations (`validate`), the
//! immutable runtime model the hot path reads (`compiled`) and the live, swappable handle (`live`).

pub mod compiled;
pub mod duration;
pub mod env;
pub mod error;
pub mod file;
pub mod live;
pub mod validate;

pub use compiled::Config;
pub use error::ConfigError;
pub use live::Live;

use std::path::Path;

/// Read, parse, validate and compile the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
    load_str(path, &text)
}

/// Parse, validate and compile config text; `path` is only used in error messages.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
    validate::compile(path, text)
}
