//! Re-reading the --config file and applying it without detaching, on
//! SIGHUP and when the file changes (`watch`) alike: a bad file is refused
//! and logged, counted, and the policy in force stays.

use std::path::Path;

use log::{debug, error, info, warn};

use crate::{
    daemon::{filter::Filter, readiness},
    observe::config_record::Trigger,
    policy::{Overrides, Policy, apply, build::sha256_hex},
};

impl Filter {
    /// Re-reads `config_path` and applies it (SIGHUP, a file change).
    /// Returns whether the new policy is in force.
    pub fn reload(
        &mut self,
        trigger: Trigger,
        config_path: Option<&Path>,
        overrides: &Overrides,
    ) -> bool {
        let what = trigger.name();
        let Some(path) = config_path else {
            info!("{what}: no --config file to re-read; policy unchanged");
            return false;
        };
        let (policy, sha256) = match Policy::load(path, overrides) {
            Ok(p) => p,
            Err(e) => {
                error!(
                    "{what}: {}: {e}; refused, keeping the policy in force",
                    path.display()
                );
                let sha = std::fs::read(path).ok().map(|b| sha256_hex(&b));
                self.config.record().refused(sha, e.to_string(), trigger);
                self.config.save();
                return false;
            }
        };
        if let Some(e) =
            crate::endpoint::cgroup::missing_required(&policy.cgroups, self.coverage.hooks.tree())
        {
            error!(
                "{what}: {}: {e}; refused, keeping the policy in force",
                path.display()
            );
            self.config.record().refused(Some(sha256), e, trigger);
            self.config.save();
            return false;
        }
        match apply::apply(&mut self.maps, &policy) {
            Ok(r) => {
                self.policy = policy;
                self.release_unwanted_pins();
                let keep: Vec<String> = self
                    .attached
                    .keys()
                    .filter(|n| self.wants(n))
                    .cloned()
                    .collect();
                self.attached.retain(|n, _| keep.contains(n));
                self.reconcile();
                self.reconcile_cgroups();
                let generation = {
                    let mut rec = self.config.record();
                    rec.applied(sha256.clone(), trigger);
                    rec.generation
                };
                self.config.save();
                info!(
                    "{what}: applied {} (sha256 {}, generation {generation}): {} blocked prefixes ({} removed)",
                    path.display(),
                    &sha256[..12],
                    r.trie_entries,
                    r.removed
                );
                for w in crate::policy::check::warnings(&self.policy) {
                    warn!("WARNING: {w}");
                }
                readiness::status(&format!(
                    "in force: {} generation {generation}",
                    path.display()
                ));
                true
            }
            Err(e) => {
                // apply() leaves the previous policy whole when it fails.
                error!("{what}: applying {}: {e}", path.display());
                self.config
                    .record()
                    .refused(Some(sha256), e.to_string(), trigger);
                self.config.save();
                false
            }
        }
    }

    /// A change seen on disk: reloads unless the file holds the version in
    /// force or the one last refused (an event that changed nothing).
    ///
    /// An empty file is not applied from here: an edit in place (`echo >`,
    /// `fs::write`) truncates the file before it writes it, and a writer
    /// descheduled in between for longer than the debounce would otherwise
    /// have the loader apply an empty file, that is the built-in defaults
    /// without the file's own rules. Its write is a new event. SIGHUP or a
    /// restart still applies an empty file.
    pub fn reload_if_changed(&mut self, config_path: &Path, overrides: &Overrides) {
        let bytes = std::fs::read(config_path).ok();
        if bytes.as_ref().is_some_and(|b| b.is_empty()) {
            warn!(
                "{}: the file is empty (being written?): the policy in force stays; \
                 SIGHUP applies an empty file on purpose",
                config_path.display()
            );
            return;
        }
        let now = bytes.map(|b| sha256_hex(&b));
        {
            let rec = self.config.record();
            let refused = rec.last_refused.as_ref().and_then(|r| r.sha256.clone());
            if now.is_some() && (now == rec.sha256 || now == refused) {
                debug!("{}: unchanged", config_path.display());
                return;
            }
        }
        self.reload(Trigger::FileChanged, Some(config_path), overrides);
    }
}
