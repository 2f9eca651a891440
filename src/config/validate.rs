//! Validation and compilation. Stub: replaced by the real implementation.

use std::path::Path;

use super::{Config, ConfigError};

pub fn compile(path: &Path, text: &str) -> Result<Config, ConfigError> {
    todo!("{path:?}{text}")
}
