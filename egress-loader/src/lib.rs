//! The userspace side of the egress filter, in layers; each imports only
//! the layers below it (`tests/layers.rs` checks this):
//!
//! ```text
//! error    Error, ConfigError, the exit status contract
//! kernel   object, maps, pins, attach, netlink, system (privileges, bpffs,
//!          lock, kernel floor), clock
//! policy   schema, values, flags, glob, build (flag > file > default), apply
//! endpoint what sends traffic here: the container engine's inventory and
//!          identity (which container holds a source address)
//! observe  counters, events, metrics, status
//! verify   proving on this host that each bridge filters
//! daemon   the run loop: reconcile, reload, GC
//! ```
//!
//! The `egress-loader` binary's CLI (`src/cli/`, one module per
//! subcommand) sits on top; the tests drive the library directly too.

pub mod daemon;
pub mod endpoint;
pub mod error;
pub mod kernel;
pub mod observe;
pub mod policy;
pub mod verify;

pub use error::Error;
