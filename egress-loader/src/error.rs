//! The library's one error type, and the exit status each error means.
//! No `anyhow` in the loader: the binary prints an [`Error`] and its sources
//! itself (`cli::main`); `anyhow` serves only its build script.
//!
//! The payloads of [`Error`]'s variants live here, below every layer that
//! makes them (the layers, `tests/layers.rs`, keep this module at the
//! bottom); each layer's own error enum converts into one of them, or into
//! [`ConfigError`].
//!
//! The exit status is a contract for scripts and probes, the same for every
//! subcommand ([`Exit`]); [`Error::exit`] is the one place an error gets
//! its status, and the match there has no catch-all, so a new variant has
//! to choose one.

use std::{io, path::PathBuf};

use aya::util::KernelVersion;

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
    /// `problem` is what the message says of the field: a text, or a
    /// layer's error (a `policy::error::ValueError`...) as it displays.
    pub fn new(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        ConfigError {
            field: field.into(),
            problem: problem.to_string(),
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
    #[error(transparent)]
    NoLoader(#[from] NoLoader),

    // The host cannot run the filter (exit 4).
    /// `missing`: each capability lacking, and what it is needed for.
    #[error(
        "missing privileges: {}. Run as root, or grant the capabilities \
         (docker: --privileged, or --cap-add BPF --cap-add NET_ADMIN --cap-add PERFMON)",
        .missing.join(", ")
    )]
    Privileges { missing: Vec<&'static str> },
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error(transparent)]
    KernelTooOld(#[from] KernelTooOld),

    // Runtime failures (exit 1).
    #[error(
        "another egress-loader is running with pin dir {0} (it holds the lock); \
         stop it first, or use `egress-loader status` to see what it enforces"
    )]
    AlreadyRunning(PathBuf),
    /// The embedded classifier object is missing or lacks the program.
    #[error(transparent)]
    Object(#[from] ObjectError),
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
    /// The pinned `map` has another shape than this build's.
    #[error(
        "the pinned maps in {dir} were made by an incompatible version ({map}: \
         key/value/entries {found}, this build needs {needed}); \
         run `egress-loader detach --pin-dir {dir}` first (this drops the counters)"
    )]
    IncompatiblePins {
        dir: PathBuf,
        map: &'static str,
        found: MapShape,
        needed: MapShape,
    },
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
    #[error(transparent)]
    Reload(#[from] ReloadError),
    /// The loader closed the events socket while `events` followed it.
    #[error("the loader closed the events socket (it exited)")]
    EventsClosed,
    /// `status --check` found the filter unhealthy, or `verify` a bridge
    /// that does not filter.
    /// (Not `#[from]`: the failure is this error's message, not its cause.)
    #[error("check failed: {0}")]
    CheckFailed(CheckFailure),
    /// A cgroup `attach.cgroups` requires is not there (`kubepods`), or the
    /// tree this process sees is not the host's.
    #[error(transparent)]
    Cgroup(#[from] MissingCgroup),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A map's key size, value size and entries, as `key/value/entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.key_size, self.value_size, self.max_entries
        )
    }
}

/// No running loader to talk to.
#[derive(Debug, thiserror::Error)]
pub enum NoLoader {
    /// `reload`: no process holds the pin dir's lock.
    #[error(
        "no running loader holds {} (a loader in another container or pid namespace can be sent SIGHUP directly)",
        .pin_dir.display()
    )]
    LockHolder { pin_dir: PathBuf },
    /// `events`: the socket is not there, or nothing listens on it.
    #[error(
        "cannot connect to {} ({cause}): is `egress-loader run` running with this --events-socket?",
        .socket.display()
    )]
    EventsSocket { socket: PathBuf, cause: io::Error },
}

/// No bpf filesystem to pin in, and none could be mounted.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error(
        "{} does not exist: is sysfs mounted? In a container, add -v /sys/fs/bpf:/sys/fs/bpf",
        .root.display()
    )]
    NoBpfRoot { root: PathBuf },
    #[error(
        "no bpf filesystem at {} and mounting one failed ({errno}); mount it yourself: \
         mount -t bpf bpf {}",
        .root.display(),
        .root.display()
    )]
    MountFailed {
        root: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error(
        "pin dir {} is not on a bpf filesystem: pick a directory under one \
         (default {default_pin_dir}), or mount one: mount -t bpf bpf DIR",
        .pin_dir.display()
    )]
    NotOnBpffs {
        pin_dir: PathBuf,
        default_pin_dir: &'static str,
    },
}

/// The running kernel is below the filter's floor.
#[derive(Debug, thiserror::Error)]
#[error(
    "Linux {running} is below this filter's floor, Linux {floor}: missing {}. \
     Upgrade the kernel; on Linux {floor} and later it runs ({below_tcx})",
    .missing.join("; ")
)]
pub struct KernelTooOld {
    pub running: KernelVersion,
    /// The floor's release, as `uname -r` would start.
    pub floor: String,
    /// Each feature the running kernel lacks: what, since when, for what.
    pub missing: Vec<String>,
    /// How the filter runs between the floor and TCX.
    pub below_tcx: &'static str,
}

/// The embedded classifier object is missing, or lacks a part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error(
        "this binary was built without the eBPF object (bpf-linker was missing); \
         build it with `cargo xtask build`"
    )]
    NotEmbedded,
    #[error("program {0} missing from the object")]
    MissingProgram(String),
    #[error("program {0} is not a classifier")]
    NotAClassifier(String),
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
}

/// `reload` reached a process but could not see its policy take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("pid {pid} holds the pin dir but is not `egress-loader run` ({args:?})")]
    NotALoader { pid: u32, args: Vec<String> },
    #[error("the loader (pid {pid}) runs without --config: there is no file to re-read")]
    NoConfig { pid: u32 },
    #[error("sending SIGHUP to pid {pid}: {errno}")]
    Signal { pid: u32, errno: nix::errno::Errno },
    #[error("pid {pid} got SIGHUP but the maps do not show the new policy after 10 s: see its log")]
    NotApplied { pid: u32 },
}

/// What `status --check` or `verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckFailure {
    #[error("no loader is running on this pin dir")]
    NoLoaderRunning,
    /// Interfaces the filter was attached to and is not any more.
    #[error("not attached: {}", .0.join(", "))]
    NotAttached(Vec<String>),
    /// `verify` found a problem other than a bridge that does not filter.
    #[error("verify found a problem (see the report)")]
    VerifyProblem,
    #[error("verify: {} does not filter", .0.join(", "))]
    DoesNotFilter(Vec<String>),
}

/// `attach.cgroups` names `kubepods`, and no kubepods cgroup can be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissingCgroup {
    /// The cgroup2 tree this process sees is not the host's; `problem`
    /// says what it is instead.
    #[error("attach.cgroups names \"kubepods\", but {problem}")]
    NotTheHostTree { problem: String },
    /// Neither of the kubelet's cgroups is in the host's tree at `tree`.
    #[error(
        "attach.cgroups names \"kubepods\", but neither /kubepods.slice (the kubelet's \
         systemd cgroup driver) nor /kubepods (its cgroupfs driver) exists in the cgroup2 \
         tree at {}: on a Kubernetes node, the kubelet creates one before any pod runs; \
         check that this tree is the node's (the DaemonSet's hostPath volume of \
         /sys/fs/cgroup), or name the cgroup the kubelet uses (--cgroup-root) as a path",
        .tree.display()
    )]
    Kubepods { tree: PathBuf },
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
            (Error::NoLoader(NoLoader::LockHolder { pin_dir: p() }), 3),
            (
                Error::Privileges {
                    missing: vec!["CAP_BPF"],
                },
                4,
            ),
            (Error::Bpffs(BpffsError::NoBpfRoot { root: p() }), 4),
            (
                Error::KernelTooOld(KernelTooOld {
                    running: KernelVersion::new(5, 10, 0),
                    floor: "5.12".into(),
                    missing: vec!["BPF_CMPXCHG".into()],
                    below_tcx: "",
                }),
                4,
            ),
            (Error::AlreadyRunning(p()), 1),
            (Error::Object(ObjectError::NotEmbedded), 1),
            (Error::Reload(ReloadError::NotApplied { pid: 1 }), 1),
            (
                Error::NewerLayout {
                    dir: p(),
                    found: 3,
                    ours: 2,
                },
                1,
            ),
            (Error::EventsClosed, 1),
            (Error::CheckFailed(CheckFailure::NoLoaderRunning), 1),
            (Error::Cgroup(MissingCgroup::Kubepods { tree: p() }), 1),
            (Error::Io(io::Error::other("x")), 1),
        ] {
            assert_eq!(e.exit_code(), want, "{e}");
        }
    }

    /// Each payload prints what the `String` it replaced printed.
    #[test]
    fn typed_payloads_print_the_old_messages() {
        let p = || PathBuf::from("/sys/fs/bpf/egress");
        for (e, want) in [
            (
                Error::NoLoader(NoLoader::LockHolder { pin_dir: p() }),
                "no running loader holds /sys/fs/bpf/egress (a loader in another container or \
                 pid namespace can be sent SIGHUP directly)",
            ),
            (
                Error::NoLoader(NoLoader::EventsSocket {
                    socket: "/run/e.sock".into(),
                    cause: io::Error::other("refused"),
                }),
                "cannot connect to /run/e.sock (refused): is `egress-loader run` running with \
                 this --events-socket?",
            ),
            (
                Error::IncompatiblePins {
                    dir: p(),
                    map: "COUNTERS",
                    found: MapShape {
                        key_size: 4,
                        value_size: 16,
                        max_entries: 8,
                    },
                    needed: MapShape {
                        key_size: 4,
                        value_size: 32,
                        max_entries: 8,
                    },
                },
                "the pinned maps in /sys/fs/bpf/egress were made by an incompatible version \
                 (COUNTERS: key/value/entries 4/16/8, this build needs 4/32/8); run \
                 `egress-loader detach --pin-dir /sys/fs/bpf/egress` first (this drops the \
                 counters)",
            ),
            (
                Error::Privileges {
                    missing: vec!["CAP_BPF (x)", "CAP_NET_ADMIN (y)"],
                },
                "missing privileges: CAP_BPF (x), CAP_NET_ADMIN (y). Run as root, or grant the \
                 capabilities (docker: --privileged, or --cap-add BPF --cap-add NET_ADMIN \
                 --cap-add PERFMON)",
            ),
            (
                Error::Bpffs(BpffsError::NoBpfRoot {
                    root: "/sys/fs/bpf".into(),
                }),
                "/sys/fs/bpf does not exist: is sysfs mounted? In a container, add -v \
                 /sys/fs/bpf:/sys/fs/bpf",
            ),
            (
                Error::Bpffs(BpffsError::MountFailed {
                    root: "/sys/fs/bpf".into(),
                    errno: nix::errno::Errno::EPERM,
                }),
                "no bpf filesystem at /sys/fs/bpf and mounting one failed (EPERM: Operation not \
                 permitted); mount it yourself: mount -t bpf bpf /sys/fs/bpf",
            ),
            (
                Error::Bpffs(BpffsError::NotOnBpffs {
                    pin_dir: "/tmp/x".into(),
                    default_pin_dir: "/sys/fs/bpf/egress",
                }),
                "pin dir /tmp/x is not on a bpf filesystem: pick a directory under one (default \
                 /sys/fs/bpf/egress), or mount one: mount -t bpf bpf DIR",
            ),
            (
                Error::KernelTooOld(KernelTooOld {
                    running: KernelVersion::new(5, 10, 0),
                    floor: "5.12".into(),
                    missing: vec![
                        "a (Linux 5.11, for x)".into(),
                        "b (Linux 5.12, for y)".into(),
                    ],
                    below_tcx: "no TCX",
                }),
                "Linux 5.10.0 is below this filter's floor, Linux 5.12: missing a (Linux 5.11, \
                 for x); b (Linux 5.12, for y). Upgrade the kernel; on Linux 5.12 and later it \
                 runs (no TCX)",
            ),
            (
                Error::Object(ObjectError::NotEmbedded),
                "this binary was built without the eBPF object (bpf-linker was missing); build \
                 it with `cargo xtask build`",
            ),
            (
                Error::Object(ObjectError::MissingProgram("egress".into())),
                "program egress missing from the object",
            ),
            (
                Error::Object(ObjectError::NotAClassifier("egress".into())),
                "program egress is not a classifier",
            ),
            (
                Error::Object(ObjectError::MissingMap("REPLY_PROGRAM")),
                "map REPLY_PROGRAM missing from the object",
            ),
            (
                Error::Reload(ReloadError::NotALoader {
                    pid: 7,
                    args: vec!["sleep".into(), "9".into()],
                }),
                "pid 7 holds the pin dir but is not `egress-loader run` ([\"sleep\", \"9\"])",
            ),
            (
                Error::Reload(ReloadError::NoConfig { pid: 7 }),
                "the loader (pid 7) runs without --config: there is no file to re-read",
            ),
            (
                Error::Reload(ReloadError::Signal {
                    pid: 7,
                    errno: nix::errno::Errno::ESRCH,
                }),
                "sending SIGHUP to pid 7: ESRCH: No such process",
            ),
            (
                Error::Reload(ReloadError::NotApplied { pid: 7 }),
                "pid 7 got SIGHUP but the maps do not show the new policy after 10 s: see its log",
            ),
            (
                Error::CheckFailed(CheckFailure::NoLoaderRunning),
                "check failed: no loader is running on this pin dir",
            ),
            (
                Error::CheckFailed(CheckFailure::NotAttached(vec!["br0".into(), "br1".into()])),
                "check failed: not attached: br0, br1",
            ),
            (
                Error::CheckFailed(CheckFailure::VerifyProblem),
                "check failed: verify found a problem (see the report)",
            ),
            (
                Error::CheckFailed(CheckFailure::DoesNotFilter(vec!["docker0".into()])),
                "check failed: verify: docker0 does not filter",
            ),
            (
                Error::Cgroup(MissingCgroup::NotTheHostTree {
                    problem: "it is a subtree".into(),
                }),
                "attach.cgroups names \"kubepods\", but it is a subtree",
            ),
            (
                Error::Cgroup(MissingCgroup::Kubepods {
                    tree: "/sys/fs/cgroup".into(),
                }),
                "attach.cgroups names \"kubepods\", but neither /kubepods.slice (the kubelet's \
                 systemd cgroup driver) nor /kubepods (its cgroupfs driver) exists in the \
                 cgroup2 tree at /sys/fs/cgroup: on a Kubernetes node, the kubelet creates one \
                 before any pod runs; check that this tree is the node's (the DaemonSet's \
                 hostPath volume of /sys/fs/cgroup), or name the cgroup the kubelet uses \
                 (--cgroup-root) as a path",
            ),
        ] {
            assert_eq!(e.to_string(), want);
            // The message is the whole of it: no "caused by" line repeats it.
            assert!(std::error::Error::source(&e).is_none(), "{e}");
        }
    }
}
