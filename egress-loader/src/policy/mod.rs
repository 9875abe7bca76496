//! The policy layer: what the filter enforces, from the configuration file
//! and the command line to the contents of the maps.
//!
//! ```text
//! schema   the TOML file as written, and the defaults
//! defaults the built-in block rules; the clouds' endpoints to keep closed or open
//! error    what a value is refused for
//! values   validated values: Rate, Cidr, Protocol, Scope, BlockRule, Policy
//! flags    the command line's value syntaxes and Overrides
//! glob     interface patterns
//! cgroups  where the cgroup hooks attach
//! build    file + flags + defaults -> Policy (flag > file > default)
//! apply    Policy -> map contents, written without a partial state
//! trace    a connection as the decision sees it, judged by the kernel's code
//! check    what a policy leaves open that it should not (warnings)
//! refused  configuration files the loader refuses, and what each refusal names
//! ```

pub mod apply;
pub mod build;
pub mod cgroups;
pub mod check;
pub mod defaults;
pub mod error;
pub mod flags;
pub mod glob;
pub mod refused;
pub mod schema;
pub mod trace;
pub mod values;

pub use flags::Overrides;
pub use schema::{ConfigFile, commented_default_config, default_config_toml};
pub use values::Policy;
