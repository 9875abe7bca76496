//! The record of the configuration in force, kept in memory for `/metrics`
//! and written to the state file for `status` after every change.

use std::path::PathBuf;

use log::warn;

use crate::observe::config_record::{ConfigRecord, SharedRecord, write_state};

/// The configuration in force, as `status` and `/metrics` see it.
pub struct ConfigTracker {
    pub record: SharedRecord,
    /// Where `status` reads the record; `None`: nowhere.
    pub state_file: Option<PathBuf>,
    warned: bool,
}

impl ConfigTracker {
    pub fn new(record: ConfigRecord, state_file: Option<PathBuf>) -> Self {
        let mut t = ConfigTracker {
            record: SharedRecord::new(record.into()),
            state_file,
            warned: false,
        };
        t.save();
        t
    }

    pub fn record(&self) -> std::sync::RwLockWriteGuard<'_, ConfigRecord> {
        self.record.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the state file; a failure is said once (`status` then cannot
    /// name the file in force, nothing else changes).
    pub fn save(&mut self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let record = self.record().clone();
        match write_state(path, &record) {
            Ok(()) => self.warned = false,
            Err(e) if !self.warned => {
                warn!(
                    "state file {}: {e}; `egress-loader status` will not show which configuration is in force",
                    path.display()
                );
                self.warned = true;
            }
            Err(_) => {}
        }
    }

    pub fn remove(&self) {
        if let Some(p) = &self.state_file {
            let _ = std::fs::remove_file(p);
        }
    }
}
