//! The observe layer: what the filter did and does, read from the kernel.
//!
//! ```text
//! config_record  which config file and version is in force, reloads
//! counters  the per-CPU counters summed, per verdict, rule and interface
//! endpoints the containers' veths: entry, container, exceptions, counters
//! explain   what the filter in force would do with a connection
//! events    drop events: ring buffer -> JSON lines -> stdout and a socket
//! metrics   Prometheus /metrics, read from the maps on every scrape
//! status    what is attached and enforced now
//! kernel_log the classifier's aya-log lines (rare conditions) through `log`
//! loader    the loader running on a pin dir: its pid, command line, directory
//! ```

pub mod config_record;
pub mod counters;
pub mod endpoints;
pub mod events;
pub mod explain;
pub mod kernel_log;
pub mod loader;
pub mod metrics;
pub mod status;
