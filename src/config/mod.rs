//! Configuration: TOML as written (`file`), validation with precise locations (`validate`, with
//! spans turned into line/column/key by `locate`), the immutable runtime model the hot path reads
//! (`compiled`), its printable `summary`, the live, swappable handle (`live`), and reloading it
//! (`reload`, triggered by SIGHUP, the admin API, or `watch` on a change of the file).

pub mod compiled;
pub(crate) mod duration;
pub(crate) mod env;
pub(crate) mod error;
pub(crate) mod file;
pub(crate) mod header_text;
pub(crate) mod live;
mod locate;
pub(crate) mod reload;
pub(crate) mod routes;
pub(crate) mod shadow;
pub mod summary;
pub(crate) mod validate;
pub(crate) mod watch;

pub(crate) use compiled::Config;
pub use error::ConfigError;
pub(crate) use live::Live;
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
