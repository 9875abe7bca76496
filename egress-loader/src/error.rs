//! The library's one error type, and the exit status each error means;
//! `anyhow` only at the binary's edge.
//!
//! The exit status is a contract for scripts and probes, the same for every
//! subcommand ([`Exit`]); [`Error::exit`] is the one place an error gets
//! its status, and the match there has no catch-all, so a new variant has
//! to choose one.

use std::{io, path::PathBuf};

/// What the process's exit status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// The kernel refused something, attach/pin/IO failed, a check failed.
    Failure = 1,
    /// A bad flag, config file or value; nothing was changed.
    InvalidInput = 2,
    /// No filter is loaded at the pin dir, or no running loader to talk to.
    NotRunning = 3,
    /// This host cannot run the filter; nothing was changed.
    HostUnsupported = 4,
}

impl Exit {
    pub const ALL: [Exit; 5] = [
        Exit::Success,
        Exit::Failure,
        Exit::InvalidInput,
        Exit::NotRunning,
        Exit::HostUnsupported,
    ];

    pub const fn code(self) -> u8 {
        self as u8
    }

    /// One line of the table `--help` prints.
    pub const fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => {
                "runtime failure: the kernel refused something, attach/pin/IO failed, \
                 a check failed (`verify` found a FAIL, `status --check` unhealthy)"
            }
            Exit::InvalidInput => {
                "invalid input: a bad flag, config file or value; nothing was changed"
            }
            Exit::NotRunning => {
                "not running: no filter is loaded at the pin dir (counters, status, detach, \
                 verify), or no running loader to talk to (reload, events)"
            }
            Exit::HostUnsupported => {
                "this host cannot run the filter: missing privileges or capabilities, kernel \
                 below the floor, no bpf filesystem; nothing was changed"
            }
        }
    }

    /// The exit status table, as `--help` shows it.
    pub fn table() -> String {
        let mut t = String::from("Exit status (every subcommand):\n");
        for e in Self::ALL {
            t.push_str(&format!("  {}  {}\n", e.code(), e.meaning()));
        }
        t
    }
}

/// An invalid configuration: names the field and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Invalid input (exit 2).
    /// Bad configuration, flags or values.
    #[error(transparent)]
    Config(#[from] ConfigError),

    // Not running (exit 3).
    #[error(
        "no filter is loaded at {0} (no pinned maps there): start one with `egress-loader run`"
    )]
    NotLoaded(PathBuf),
    #[error("nothing to detach: {0} does not exist")]
    NothingToDetach(PathBuf),
    /// No running loader to talk to (`reload`: none holds the pin dir;
    /// `events`: nothing listens on the socket).
    #[error("{0}")]
    NoLoader(String),

    // The host cannot run the filter (exit 4).
    #[error(
        "missing privileges: {missing}. Run as root, or grant the capabilities \
         (docker: --privileged, or --cap-add BPF --cap-add NET_ADMIN --cap-add PERFMON)"
    )]
    Privileges { missing: String },
    #[error("{0}")]
    Bpffs(String),
    #[error("{0}")]
    KernelTooOld(String),

    // Runtime failures (exit 1).
    #[error(
        "another egress-loader is running with pin dir {0} (it holds the lock); \
         stop it first, or use `egress-loader status` to see what it enforces"
    )]
    AlreadyRunning(PathBuf),
    /// The embedded classifier object is missing or lacks the program.
    #[error("{0}")]
    Object(String),
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
    #[error("{context}: {source}")]
    Pin {
        context: String,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(
        "the pinned maps in {dir} were made by an incompatible version ({detail}); \
         run `egress-loader detach --pin-dir {dir}` first (this drops the counters)"
    )]
    IncompatiblePins { dir: PathBuf, detail: String },
    #[error(
        "the filter pinned at {dir} has map layout {found}, made by a newer egress-loader \
         (this one knows layout {ours}): refusing to downgrade; nothing was changed. Run the \
         newer version, or remove the filter with that version's `egress-loader detach` \
         (which drops the counters and leaves the bridges unfiltered until the next run)"
    )]
    NewerLayout { dir: PathBuf, found: u32, ours: u32 },
    #[error(
        "the filter pinned at {dir} has map layout {found}; this egress-loader reads layout \
         {ours}: this version's `egress-loader run` migrates it in place (no gap, counters \
         kept), or use the version that pinned it"
    )]
    OtherLayout { dir: PathBuf, found: u32, ours: u32 },
    /// `reload` reached the loader but could not see its policy take effect.
    #[error("{0}")]
    Reload(String),
    /// The loader closed the events socket while `events` followed it.
    #[error("the loader closed the events socket (it exited)")]
    EventsClosed,
    /// `status --check` found the filter unhealthy, or `verify` a bridge
    /// that does not filter.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// A cgroup `attach.cgroups` requires is not there (`kubepods`), or the
    /// tree this process sees is not the host's.
    #[error("{0}")]
    Cgroup(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    pub fn map(name: &'static str, source: aya::maps::MapError) -> Self {
        Error::Map { name, source }
    }

    /// The exit status this error means (see [`Exit`]).
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) => Exit::InvalidInput,
            Error::NotLoaded(_) | Error::NothingToDetach(_) | Error::NoLoader(_) => {
                Exit::NotRunning
            }
            Error::Privileges { .. } | Error::Bpffs(_) | Error::KernelTooOld(_) => {
                Exit::HostUnsupported
            }
            Error::AlreadyRunning(_)
            | Error::Object(_)
            | Error::Map { .. }
            | Error::Load(_)
            | Error::Program { .. }
            | Error::Link { .. }
            | Error::Pin { .. }
            | Error::IncompatiblePins { .. }
            | Error::NewerLayout { .. }
            | Error::OtherLayout { .. }
            | Error::Reload(_)
            | Error::EventsClosed
            | Error::CheckFailed(_)
            | Error::Cgroup(_)
            | Error::Io(_) => Exit::Failure,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.exit().code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_status_in_order() {
        let t = Exit::table();
        let codes: Vec<&str> = t
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(codes, ["0", "1", "2", "3", "4"], "{t}");
    }

    #[test]
    fn each_kind_of_error_has_its_status() {
        let p = || PathBuf::from("/sys/fs/bpf/egress");
        for (e, want) in [
            (Error::Config(ConfigError::new("smtp.rate", "x")), 2),
            (Error::NotLoaded(p()), 3),
            (Error::NothingToDetach(p()), 3),
            (Error::NoLoader("no loader".into()), 3),
            (
                Error::Privileges {
                    missing: "CAP_BPF".into(),
                },
                4,
            ),
            (Error::Bpffs("none".into()), 4),
            (Error::KernelTooOld("5.10".into()), 4),
            (Error::AlreadyRunning(p()), 1),
            (Error::Object("no object".into()), 1),
            (Error::Reload("timed out".into()), 1),
            (
                Error::NewerLayout {
                    dir: p(),
                    found: 3,
                    ours: 2,
                },
                1,
            ),
            (Error::EventsClosed, 1),
            (Error::CheckFailed("unhealthy".into()), 1),
            (Error::Cgroup("no kubepods".into()), 1),
            (Error::Io(io::Error::other("x")), 1),
        ] {
            assert_eq!(e.exit_code(), want, "{e}");
        }
    }
}
