//! Reload when the config file changes.
//!
//! The *directory* is watched, not the file: editors save by writing a new file and renaming it
//! over the old one, and Kubernetes updates a mounted ConfigMap by swapping its `..data` symlink,
//! and a watch on the file itself would follow the old inode and miss both. Events are debounced
//! (an editor's save is several events), and a reload only happens when the file's text actually
//! differs from what the last reload read, so a `touch`, a chmod or our own read never count as a
//! reload. A file that is missing when the events settle (mid-rename) waits for the next event.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::reload::{Reloader, Trigger};

/// Quiet time after the last event before reloading.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir}: {source}")]
pub(crate) struct WatchError {
    dir: PathBuf,
    source: notify::Error,
}

/// Start watching the running config's file; the returned task owns the watcher.
pub(crate) fn spawn(reloader: Arc<Reloader>) -> Result<JoinHandle<()>, WatchError> {
    let path = absolute(&reloader.live().snapshot().source);
    let targets = Targets::of(&path);
    let (tx, rx) = mpsc::channel::<()>(1);
    let filter = targets.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if filter.is_relevant(&event) => {
                // Full means a wake-up is already pending, which is all that is needed.
                let _ = tx.try_send(());
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "config file watch error"),
        })
        .map_err(|source| WatchError {
            dir: targets.dirs[0].clone(),
            source,
        })?;
    for dir in &targets.dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                dir: dir.clone(),
                source,
            })?;
    }
    tracing::info!(file = %path.display(), "watching the config file for changes");
    Ok(tokio::spawn(run(watcher, rx, reloader, path)))
}

async fn run(
    // Owned so that watching lasts as long as this task.
    _watcher: RecommendedWatcher,
    mut rx: mpsc::Receiver<()>,
    reloader: Arc<Reloader>,
    path: PathBuf,
) {
    while rx.recv().await.is_some() {
        // Debounce: wait until the directory has been quiet for DEBOUNCE.
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(err) => {
                tracing::debug!(error = %err, "config file not readable yet; waiting for the next change");
                continue;
            }
        };
        if !reloader.is_new_text(&text) {
            tracing::debug!("config file event without a change of content");
            continue;
        }
        // The outcome is logged and counted by the reloader.
        let _ = reloader.reload_async(Trigger::FileWatch).await;
    }
}

/// The directories to watch and the names in them that matter.
#[derive(Debug, Clone)]
struct Targets {
    dirs: Vec<PathBuf>,
    names: Vec<OsString>,
}

impl Targets {
    fn of(path: &Path) -> Self {
        let mut targets = Targets {
            dirs: Vec::new(),
            names: Vec::new(),
        };
        targets.add(path);
        // A symlinked config (a ConfigMap's `rategate.toml -> ..data/rategate.toml`, or a link to
        // a file elsewhere): its real directory too.
        if let Ok(real) = std::fs::canonicalize(path) {
            targets.add(&real);
        }
        targets
    }

    fn add(&mut self, path: &Path) {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        if !self.dirs.contains(&dir) {
            self.dirs.push(dir);
        }
        if let Some(name) = path.file_name() {
            if !self.names.iter().any(|n| n == name) {
                self.names.push(name.to_os_string());
            }
        }
    }

    fn is_relevant(&self, event: &notify::Event) -> bool {
        // Reads (including the reload's own) are not changes.
        if matches!(
            event.kind,
            EventKind::Access(AccessKind::Open(_) | AccessKind::Read)
        ) || matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(notify::event::AccessMode::Read))
        ) {
            return false;
        }
        event.paths.iter().any(|p| {
            p.file_name().is_some_and(|name| {
                self.names.iter().any(|n| n == name)
                    // Kubernetes swaps `..data` (via `..data_tmp`) to update every file at once.
                    || name.to_string_lossy().starts_with("..data")
            })
        })
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind};

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn relevant_events() {
        let t = Targets::of(Path::new("/etc/rategate/rategate.toml"));
        assert_eq!(t.dirs, [PathBuf::from("/etc/rategate")]);
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(t.is_relevant(&event(modify, "/etc/rategate/rategate.toml")));
        assert!(t.is_relevant(&event(
            EventKind::Create(CreateKind::File),
            "/etc/rategate/..data"
        )));
        assert!(!t.is_relevant(&event(modify, "/etc/rategate/other.toml")));
        assert!(!t.is_relevant(&event(
            EventKind::Access(AccessKind::Read),
            "/etc/rategate/rategate.toml"
        )));
        assert!(t.is_relevant(&event(
            EventKind::Access(AccessKind::Close(notify::event::AccessMode::Write)),
            "/etc/rategate/rategate.toml"
        )));
    }
}
