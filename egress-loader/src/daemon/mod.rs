//! The daemon: `run`'s phases and loop, which wire the layers below together.
//!
//! ```text
//! run        the phases in order: check_host, load, apply, attach; then observe, the loop, shutdown
//! wake       observe (every source of a wake), the Wake enum, and Daemon: the state between
//!            wakes, one method per kind of wake
//! filter     Filter: what is in the kernel while `run` runs; fields private, methods by concern:
//!   filter/interfaces  the bridges' program in line with the interfaces that exist and match
//!   filter/endpoints   the veths' program and entries in line with the filtered bridges' ports
//!   filter/cgroups     the cgroup hooks in line with their targets; what is attached, for coverage
//!   filter/reload      SIGHUP or a file change: re-read --config, apply it without detaching
//! endpoints  the endpoint maps' state: entries, counters slots, exceptions
//! cgroups    the cgroup hooks' state: programs, targets, attached cgroups, their watch
//! coverage   which hook filters each container, followed while running
//! watch      follow the --config file (its directory: renames, symlink swaps)
//! record     the config in force, for status (state file) and /metrics
//! readiness  READY=1 for systemd once the filter is in force
//! gc         forget refilled per-source SMTP buckets
//! ```
//!
//! Within the layer, a module uses only those below it in this order:
//! run -> wake -> filter -> (endpoints, cgroups, record, readiness, gc);
//! wake -> (coverage, watch).

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
