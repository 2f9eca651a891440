use std::process::ExitCode;

use clap::Parser;

use rategate::cli::{Cli, Command};
use rategate::config;

fn main() -> ExitCode {
    let code = run();
    // Log lines wait in memory for up to 50 ms: every way out of `run` passes here.
    rategate::telemetry::flush();
    code
}

fn run() -> ExitCode {
    let cli = Cli::parse();
    let loaded = config::load(&cli.config).and_then(|c| rategate::app::preflight(&c).map(|()| c));
    let config = match loaded {
        Ok(config) => config,
        Err(err) => {
            eprintln!("config error: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            print!("{}", config::summary::summary(&config));
            println!("config OK: {}", cli.config.display());
            ExitCode::SUCCESS
        }
        Command::Run => {
            rategate::telemetry::init(cli.log_format);
            match rategate::app::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "rategate stopped");
                    eprintln!("error: {err:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
