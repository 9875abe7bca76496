//! The userspace side of the egress filter: configuration, policy, loading,
//! attaching, and reading counters. The `egress-loader` binary is a thin CLI
//! over this library; the tests drive it directly too.

pub mod attach;
pub mod config;
pub mod counters;
pub mod error;
pub mod events;
pub mod identity;
pub mod kernel_log;
pub mod maps;
pub mod metrics;
pub mod netlink;
pub mod object;
pub mod pins;
pub mod policy;
pub mod run;
pub mod status;
pub mod system;
pub mod verify;

pub use error::Error;
