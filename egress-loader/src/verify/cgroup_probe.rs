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
    ffi::CString,
    os::unix::process::{CommandExt, ExitStatusExt},
    process::Command,
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

// Exit statuses of the probe child.
const EXIT_REFUSED: i32 = 0;
const EXIT_NOT_REFUSED: i32 = 1;
const EXIT_JOIN_FAILED: i32 = 2;
const EXIT_SOCKET_FAILED: i32 = 3;
const EXIT_OTHER: i32 = 10;

/// Runs one probe in a new cgroup `parent/egress-verify-<pid>`.
pub fn probe(fs: &CgroupFs, parent: &str) -> Result<Outcome, String> {
    let rel = format!("{parent}/egress-verify-{}", std::process::id());
    let dir = fs.path(&rel);
    std::fs::create_dir(&dir).map_err(|e| format!("creating cgroup {}: {e}", dir.display()))?;
    let result = run_child(&dir.join("cgroup.procs"));
    // The child has exited: the cgroup is empty and can go.
    let removed = std::fs::remove_dir(&dir);
    let outcome = result?;
    removed.map_err(|e| format!("removing cgroup {}: {e}", dir.display()))?;
    Ok(outcome)
}

fn run_child(procs: &std::path::Path) -> Result<Outcome, String> {
    let procs = CString::new(procs.as_os_str().as_encoded_bytes())
        .map_err(|e| format!("cgroup path: {e}"))?;
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
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the probe process: {e}"))?;
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the probe process: {e}"))?;
    match status.code() {
        Some(EXIT_REFUSED) => Ok(Outcome::Refused),
        Some(EXIT_NOT_REFUSED) => Ok(Outcome::NotRefused),
        Some(EXIT_JOIN_FAILED) => Err("the probe process could not join its cgroup".into()),
        Some(EXIT_SOCKET_FAILED) => Err("the probe process could not make its socket".into()),
        Some(c) if c >= EXIT_OTHER => Ok(Outcome::Failed(c - EXIT_OTHER)),
        _ => Err(format!(
            "the probe process ended with {status}{}",
            status
                .signal()
                .map(|s| format!(" (signal {s})"))
                .unwrap_or_default()
        )),
    }
}
