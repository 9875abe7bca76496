//! `verify` for the cgroup hooks: a process is started in a throwaway cgroup
//! below each attached cgroup (where the engine's next container would be),
//! in the host's network namespace like a host-network container, and
//! connects to the metadata address. The hooks must refuse the `connect()`
//! with EPERM at once, and `cgroup/connect4` count it.
//!
//! The socket carries TTL 1 and is non-blocking: if the hooks do not refuse,
//! the one SYN it sends never leaves the host, and the probe does not wait
//! for it. The child process does everything between `fork` and `exec` with
//! plain system calls (no allocation), then exits with the outcome as its
//! status; it never runs another program. The cgroup is removed afterwards.

use std::{
    ffi::{CString, NulError},
    io,
    os::unix::process::{CommandExt, ExitStatusExt},
    path::PathBuf,
    process::{Command, ExitStatus},
};

use crate::{kernel::cgroup::CgroupFs, verify::probe::METADATA_PROBE};

/// What became of the probe's `connect()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// EPERM: a cgroup hook refused it.
    Refused,
    /// It went on (EINPROGRESS): the SYN was sent, with TTL 1.
    NotRefused,
    /// Something else failed: the errno, or the step (see `status`).
    Failed(i32),
}

/// Why a probe could not say whether the hooks refuse: a problem line of
/// the report.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("creating cgroup {}: {cause}", .dir.display())]
    CreateCgroup { dir: PathBuf, cause: io::Error },
    #[error("removing cgroup {}: {cause}", .dir.display())]
    RemoveCgroup { dir: PathBuf, cause: io::Error },
    #[error("cgroup path: {0}")]
    CgroupPath(NulError),
    #[error("starting the probe process: {0}")]
    Spawn(io::Error),
    #[error("waiting for the probe process: {0}")]
    Wait(io::Error),
    #[error("the probe process could not join its cgroup")]
    JoinFailed,
    #[error("the probe process could not make its socket")]
    SocketFailed,
    #[error(
        "the probe process ended with {status}{}",
        .status.signal().map(|s| format!(" (signal {s})")).unwrap_or_default()
    )]
    Ended { status: ExitStatus },
}

// Exit statuses of the probe child.
const EXIT_REFUSED: i32 = 0;
const EXIT_NOT_REFUSED: i32 = 1;
const EXIT_JOIN_FAILED: i32 = 2;
const EXIT_SOCKET_FAILED: i32 = 3;
const EXIT_OTHER: i32 = 10;

/// Runs one probe in a new cgroup `parent/egress-verify-<pid>`.
pub fn probe(fs: &CgroupFs, parent: &str) -> Result<Outcome, ProbeError> {
    let rel = format!("{parent}/egress-verify-{}", std::process::id());
    let dir = fs.path(&rel);
    if let Err(cause) = std::fs::create_dir(&dir) {
        return Err(ProbeError::CreateCgroup { dir, cause });
    }
    let result = run_child(&dir.join("cgroup.procs"));
    // The child has exited: the cgroup is empty and can go.
    let removed = std::fs::remove_dir(&dir);
    let outcome = result?;
    removed.map_err(|cause| ProbeError::RemoveCgroup { dir, cause })?;
    Ok(outcome)
}

fn run_child(procs: &std::path::Path) -> Result<Outcome, ProbeError> {
    let procs =
        CString::new(procs.as_os_str().as_encoded_bytes()).map_err(ProbeError::CgroupPath)?;
    let ip = u32::from_ne_bytes(METADATA_PROBE.ip().octets());
    let port = METADATA_PROBE.port().to_be();
    let mut cmd = Command::new("/nonexistent/egress-verify-probe");
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes system calls on stack values, then exits: nothing of the parent's
    // state (locks, allocator) is touched.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(EXIT_JOIN_FAILED);
            }
            libc::close(fd);
            let s = libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            if s < 0 {
                libc::_exit(EXIT_SOCKET_FAILED);
            }
            let ttl: libc::c_int = 1;
            if libc::setsockopt(
                s,
                libc::IPPROTO_IP,
                libc::IP_TTL,
                (&ttl as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                libc::_exit(EXIT_SOCKET_FAILED);
            }
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port,
                sin_addr: libc::in_addr { s_addr: ip },
                sin_zero: [0; 8],
            };
            let r = libc::connect(
                s,
                (&addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let errno = *libc::__errno_location();
            libc::_exit(match (r, errno) {
                (0, _) => EXIT_NOT_REFUSED,
                (_, libc::EPERM) => EXIT_REFUSED,
                (_, libc::EINPROGRESS) => EXIT_NOT_REFUSED,
                (_, e) => EXIT_OTHER + e.min(100),
            });
        });
    }
    let mut child = cmd.spawn().map_err(ProbeError::Spawn)?;
    let status = child.wait().map_err(ProbeError::Wait)?;
    match status.code() {
        Some(EXIT_REFUSED) => Ok(Outcome::Refused),
        Some(EXIT_NOT_REFUSED) => Ok(Outcome::NotRefused),
        Some(EXIT_JOIN_FAILED) => Err(ProbeError::JoinFailed),
        Some(EXIT_SOCKET_FAILED) => Err(ProbeError::SocketFailed),
        Some(c) if c >= EXIT_OTHER => Ok(Outcome::Failed(c - EXIT_OTHER)),
        _ => Err(ProbeError::Ended { status }),
    }
}
