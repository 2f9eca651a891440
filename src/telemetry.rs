//! Logging setup: pretty for people, JSON for machines; `RUST_LOG` filters. Lines go to stdout
//! through an in-memory buffer (see [`buffer`]); [`flush`] writes what is waiting and every exit
//! path calls it.

mod buffer;

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use buffer::{BufferedWriter, LogBuffer};

/// The buffer of the subscriber this process installed, if it installed one.
static BUFFER: OnceLock<Arc<LogBuffer>> = OnceLock::new();

pub fn init(format: Option<LogFormat>) {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let buffer = LogBuffer::new(Box::new(std::io::stdout()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BufferedWriter(buffer.clone()));
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // A second init (tests running the app in-process) keeps the first subscriber and its buffer.
    if installed.is_err() || BUFFER.set(buffer.clone()).is_err() {
        return;
    }
    if let Err(err) = buffer.spawn_flusher() {
        // Without a flusher lines would wait for exit: better to say so at once.
        eprintln!("log flusher thread not started ({err}); log lines are written at exit only");
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
}

/// Writes out every line logged so far. Exit paths call it: the buffer lives in memory and
/// `std::process::exit` runs no destructors.
pub fn flush() {
    if let Some(buffer) = BUFFER.get() {
        buffer.flush();
    }
}
