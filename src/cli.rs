//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rategate",
    version,
    about = "Reverse-proxy rate-limiting gateway"
)]
pub struct Cli {
    /// Path of the TOML config file.
    #[arg(long, short, global = true, default_value = "config/rategate.toml")]
    pub config: PathBuf,

    /// Log output format (default: pretty on a terminal, json otherwise). RUST_LOG filters.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config, print a summary, and exit 0 (or 2 on an error).
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}
