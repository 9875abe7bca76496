//! SIGHUP: re-read the --config file and apply it without detaching; a bad
//! file is refused and the policy in force stays.

use std::path::Path;

use log::{error, info};

use crate::{
    daemon::reconcile::Filter,
    kernel::system,
    policy::{Overrides, Policy, apply, glob::pattern_matches},
};

impl Filter {
    pub fn reload(&mut self, config_path: Option<&Path>, overrides: &Overrides) {
        let Some(path) = config_path else {
            info!("SIGHUP: no --config file to re-read; policy unchanged");
            return;
        };
        let policy = match Policy::from_file(path, overrides) {
            Ok(p) => p,
            Err(e) => {
                error!(
                    "SIGHUP: {}: {e}; keeping the policy in force",
                    path.display()
                );
                return;
            }
        };
        match apply::apply(&mut self.maps, &policy) {
            Ok(r) => {
                info!(
                    "SIGHUP: applied {}: {} blocked prefixes ({} removed)",
                    path.display(),
                    r.trie_entries,
                    r.removed
                );
                self.policy = policy;
                self.release_unwanted_pins();
                self.attached
                    .retain(|n, _| self.policy.interfaces.iter().any(|p| pattern_matches(p, n)));
                self.reconcile();
                system::release_freed_heap();
            }
            Err(e) => error!("SIGHUP: applying {}: {e}", path.display()),
        }
    }
}
