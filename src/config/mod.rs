//! Configuration: TOML as written (`file`), validation with precise locations (`validate`, with
//! spans turned into line/column/key by `locate`), the immutable runtime model the hot path reads
//! (`compiled`), its printable `summary`, the live, swappable handle (`live`), and reloading it
//! (`reload`, triggered by SIGHUP, the admin API, or `watch` on a change of the file).

pub mod compiled;
pub mod duration;
pub mod env;
pub mod error;
pub mod file;
pub mod live;
mod locate;
pub mod reload;
pub mod summary;
pub mod validate;
pub mod watch;

pub use compiled::Config;
pub use error::ConfigError;
pub use live::Live;
pub use summary::summary;

use std::path::Path;

/// Read, parse, validate and compile the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
    load_str(path, &text)
}

/// Parse, validate and compile config text; `path` only names the file (in errors and
/// `Config::source`).
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
    validate::compile(path, text)
}
