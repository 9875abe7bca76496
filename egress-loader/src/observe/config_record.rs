//! Which configuration is in force: the file, the SHA-256 of the bytes the
//! policy was built from, a generation (1 at start, one more per applied
//! reload), the last version refused, and the reload counts.
//!
//! The maps hold the policy but not where it came from, so the running
//! loader writes this record to a state file (default
//! [`DEFAULT_STATE_FILE`], next to the events socket: `/run` is per boot,
//! like bpffs, and it is where every deployment gives the loader a writable
//! directory: systemd's `RuntimeDirectory=`, the container's tmpfs, the
//! pod's emptyDir). `status` reads it; `/metrics` reads the same record in
//! memory.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub const DEFAULT_STATE_FILE: &str = "/run/egress-filter/state.json";

/// What made the loader (re)read its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The policy `run` started with.
    Start,
    /// SIGHUP (`egress-loader reload`, `systemctl reload`, `docker kill -s HUP`).
    Sighup,
    /// The file changed on disk (an edit, a rename over it, a ConfigMap's
    /// symlink swap).
    FileChanged,
}

impl Trigger {
    pub const fn name(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Sighup => "SIGHUP",
            Trigger::FileChanged => "file change",
        }
    }
}

/// A version of the file that was refused; the policy in force stayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// `None` when the file could not be read at all.
    pub sha256: Option<String>,
    pub error: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub trigger: Trigger,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// The pin dir of the loader that wrote this (a record for another pin
    /// dir is not this filter's).
    pub pin_dir: String,
    pub pid: u32,
    /// The `--config` file as given (absolute); `None`: defaults and flags only.
    pub path: Option<String>,
    /// SHA-256 (hex) of the bytes the policy in force was built from.
    pub sha256: Option<String>,
    /// 1 for the policy `run` started with, one more per applied reload.
    pub generation: u64,
    /// When the policy in force was applied, seconds since the Unix epoch.
    pub applied_at: u64,
    pub applied_by: Trigger,
    /// Whether the loader follows the file (without `--no-watch-config`).
    pub follows_file: bool,
    pub reloads_ok: u64,
    pub reloads_refused: u64,
    pub last_refused: Option<Refusal>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl ConfigRecord {
    pub fn new(pin_dir: &Path, path: Option<&Path>, sha256: Option<String>, follows: bool) -> Self {
        ConfigRecord {
            pin_dir: pin_dir.display().to_string(),
            pid: std::process::id(),
            path: path.map(|p| p.display().to_string()),
            sha256,
            generation: 1,
            applied_at: now(),
            applied_by: Trigger::Start,
            follows_file: follows && path.is_some(),
            reloads_ok: 0,
            reloads_refused: 0,
            last_refused: None,
        }
    }

    pub fn applied(&mut self, sha256: String, trigger: Trigger) {
        self.sha256 = Some(sha256);
        self.generation += 1;
        self.applied_at = now();
        self.applied_by = trigger;
        self.reloads_ok += 1;
    }

    /// `error` is kept as it displays: the record says why, to be read.
    pub fn refused(&mut self, sha256: Option<String>, error: impl fmt::Display, trigger: Trigger) {
        self.reloads_refused += 1;
        self.last_refused = Some(Refusal {
            sha256,
            error: error.to_string(),
            at: now(),
            trigger,
        });
    }
}

/// The record, shared by the run loop (which changes it) and the metrics
/// server (which reads it).
pub type SharedRecord = Arc<RwLock<ConfigRecord>>;

/// Writes the record where `status` reads it: a whole new file renamed over
/// the old one, so a reader never sees half of it.
pub fn write_state(path: &Path, record: &ConfigRecord) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let text = serde_json::to_string_pretty(record).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The record in `path` if it was written for `pin_dir`.
pub fn read_state(path: &Path, pin_dir: &Path) -> Option<ConfigRecord> {
    let text = std::fs::read_to_string(path).ok()?;
    let record: ConfigRecord = serde_json::from_str(&text).ok()?;
    (Path::new(&record.pin_dir) == pin_dir).then_some(record)
}

/// The state file in effect: `None` for "none".
pub fn state_file_arg(arg: &Path) -> Option<PathBuf> {
    (arg.as_os_str() != "none").then(|| arg.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_belongs_to_its_pin_dir() {
        let dir = std::env::temp_dir().join(format!("egress-state-{}", std::process::id()));
        let path = dir.join("state.json");
        let mut r = ConfigRecord::new(
            Path::new("/sys/fs/bpf/egress"),
            Some(Path::new("/etc/egress-filter/config.toml")),
            Some("ab".into()),
            true,
        );
        r.applied("cd".into(), Trigger::FileChanged);
        r.refused(Some("ef".into()), "smtp.rate: x", Trigger::Sighup);
        write_state(&path, &r).unwrap();
        assert_eq!(read_state(&path, Path::new("/sys/fs/bpf/egress")), Some(r));
        assert_eq!(read_state(&path, Path::new("/sys/fs/bpf/other")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generations_count_applied_reloads_only() {
        let mut r = ConfigRecord::new(Path::new("/p"), None, None, true);
        assert_eq!((r.generation, r.follows_file), (1, false));
        r.refused(None, "x", Trigger::FileChanged);
        assert_eq!((r.generation, r.reloads_ok, r.reloads_refused), (1, 0, 1));
        r.applied("a".into(), Trigger::Sighup);
        assert_eq!((r.generation, r.reloads_ok, r.reloads_refused), (2, 1, 1));
    }
}
