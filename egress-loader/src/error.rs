//! The library's one error type; `anyhow` only at the binary's edge.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration or flags: exit status 2, nothing changed.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "missing privileges: {missing}. Run as root, or grant the capabilities \
         (docker: --privileged, or --cap-add BPF --cap-add NET_ADMIN --cap-add PERFMON)"
    )]
    Privileges { missing: String },
    #[error("{0}")]
    Bpffs(String),
    #[error(
        "another egress-loader is running with pin dir {0} (it holds the lock); \
         stop it first, or use `egress-loader status` to see what it enforces"
    )]
    AlreadyRunning(PathBuf),
    #[error(
        "no filter is loaded at {0} (no pinned maps there): start one with `egress-loader run`"
    )]
    NotLoaded(PathBuf),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("loading the classifier: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("{context}: {source}")]
    Program {
        context: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{context}: {source}")]
    Link {
        context: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error(
        "the pinned maps in {dir} were made by an incompatible version ({detail}); \
         run `egress-loader detach --pin-dir {dir}` first (this drops the counters)"
    )]
    IncompatiblePins { dir: PathBuf, detail: String },
    /// `status --check` found the filter unhealthy.
    #[error("check failed: {0}")]
    Unhealthy(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    pub fn map(name: &'static str, source: aya::maps::MapError) -> Self {
        Error::Map { name, source }
    }

    /// Exit status: 2 for invalid input (nothing was changed), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Invalid(_) => 2,
            _ => 1,
        }
    }
}
