//! The daemon: `run`'s phases and loop, which wire the layers below together.
//!
//! ```text
//! run        the phases in order: check_host, load, apply, attach; observe, the loop, shutdown
//! wake       observe, what wakes the loop (Wake), and Daemon: one method per kind of wake
//! filter     Filter, what is in the kernel; its methods by concern in filter/ (filter.rs says which)
//! endpoints  the endpoint maps: entries, counters slots, exceptions
//! cgroups    the cgroup hooks: programs, targets, attached cgroups, their watch
//! coverage   which hook filters each container, followed while running
//! watch      follow the --config file (its directory: renames, symlink swaps)
//! record     the config in force, for status (state file) and /metrics
//! readiness  READY=1 for systemd once the filter is in force
//! gc         forget refilled per-source SMTP buckets
//! ```
//!
//! `Filter`'s fields and `Daemon`'s are private to their modules: the
//! phases and the loop ask them through methods. Within the layer a module
//! uses only modules listed after it (`run` uses `wake` and `filter`,
//! `wake` uses `filter`), never one before it.

mod cgroups;
mod coverage;
mod endpoints;
mod filter;
mod gc;
mod readiness;
mod record;
mod run;
mod wake;
mod watch;

pub use run::{RunOptions, run};
