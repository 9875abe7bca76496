//! The daemon: `run`'s loop, which wires the layers below together.
//!
//! ```text
//! run        load, apply, attach, then follow signals, link events, drop events
//! reconcile  attachments in line with the interfaces that exist and match
//! endpoints  the endpoint maps: entries, counters slots, exceptions
//! attach_endpoints  the program on each container's veth, following the veths
//! cgroups    the cgroup hooks in line with the cgroups containers run under
//! coverage   which hook filters each container, followed while running
//! reload     SIGHUP or a file change: re-read --config, apply it without detaching
//! watch      follow the --config file (its directory: renames, symlink swaps)
//! record     the config in force, for status (state file) and /metrics
//! readiness  READY=1 for systemd once the filter is in force
//! gc         forget refilled per-source SMTP buckets
//! ```

mod attach_endpoints;
mod cgroups;
mod coverage;
mod endpoints;
mod gc;
mod readiness;
mod reconcile;
mod record;
mod reload;
mod run;
mod watch;

pub use run::{RunOptions, run};
