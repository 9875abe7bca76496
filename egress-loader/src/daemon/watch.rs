//! Following the `--config` file: a change on disk is applied the way
//! SIGHUP applies it (`reload`).
//!
//! The watch is on the file's directory, not on the file: editors replace
//! a file by renaming a new one over it, and a Kubernetes ConfigMap volume
//! swaps a `..data` symlink in that directory, so the file's own inode
//! never changes. Events are debounced ([`DEBOUNCE`]), then the loader
//! compares the file's SHA-256 with what is in force, so a burst of events
//! is one reload and an event that changed nothing is none.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use log::{debug, warn};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::{sync::mpsc, time::Instant};

/// Quiet time after the last event before the file is read: a ConfigMap
/// update or an editor's save is a burst of a few events within
/// milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

pub struct ConfigWatch {
    path: PathBuf,
    watcher: RecommendedWatcher,
    watched: Vec<PathBuf>,
    events: mpsc::UnboundedReceiver<()>,
    /// When the file is read, if events are pending.
    deadline: Option<Instant>,
}

/// The directories whose entries decide what `path` reads: its own, and
/// that of the file it resolves to through symlinks.
fn directories(path: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut push = |p: &Path| {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty())
            && !dirs.iter().any(|x| x == d)
        {
            dirs.push(d.to_path_buf());
        }
    };
    push(path);
    if let Ok(target) = std::fs::canonicalize(path) {
        push(&target);
    }
    dirs
}

impl ConfigWatch {
    /// Watches `path` (absolute). Fails when the directory cannot be
    /// watched (the caller falls back to SIGHUP only).
    pub fn start(path: &Path) -> notify::Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                // Opening and reading (ours included) change nothing.
                Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
                Ok(_) => {
                    let _ = tx.send(());
                }
                Err(e) => warn!("watching the config file: {e}"),
            }
        })?;
        let mut w = ConfigWatch {
            path: path.to_path_buf(),
            watcher,
            watched: Vec::new(),
            events,
            deadline: None,
        };
        w.rewatch();
        if w.watched.is_empty() {
            return Err(notify::Error::generic(&format!(
                "cannot watch the directory of {}",
                path.display()
            )));
        }
        Ok(w)
    }

    /// Follows a symlink that now points elsewhere (a ConfigMap's new
    /// `..<timestamp>` directory): watches the directories the path
    /// resolves through now, drops the others.
    pub fn rewatch(&mut self) {
        let want = directories(&self.path);
        for d in self.watched.clone() {
            if !want.contains(&d) {
                let _ = self.watcher.unwatch(&d);
                self.watched.retain(|x| *x != d);
            }
        }
        for d in want {
            if self.watched.contains(&d) {
                continue;
            }
            match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(
                        "watching {} for changes of {}",
                        d.display(),
                        self.path.display()
                    );
                    self.watched.push(d);
                }
                Err(e) => warn!("cannot watch {}: {e}", d.display()),
            }
        }
    }

    /// Resolves once events came and then [`DEBOUNCE`] passed without one.
    /// Cancel-safe: pending events are kept in `self`, so the run loop may
    /// drop this future whenever another branch fires.
    pub async fn changed(&mut self) {
        loop {
            match self.deadline {
                None => match self.events.recv().await {
                    Some(()) => self.deadline = Some(Instant::now() + DEBOUNCE),
                    None => std::future::pending().await,
                },
                Some(at) => tokio::select! {
                    e = self.events.recv() => {
                        if e.is_some() {
                            self.deadline = Some(Instant::now() + DEBOUNCE);
                        }
                    }
                    _ = tokio::time::sleep_until(at) => {
                        self.deadline = None;
                        return;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_file_is_watched_where_it_points_too() {
        let dir = std::env::temp_dir().join(format!("egress-watch-{}", std::process::id()));
        let data = dir.join("..2026_12_01");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("config.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_12_01", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.toml", dir.join("config.toml")).unwrap();
        let dirs = directories(&dir.join("config.toml"));
        let canonical = std::fs::canonicalize(&data).unwrap();
        assert_eq!(dirs, [dir.clone(), canonical]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
