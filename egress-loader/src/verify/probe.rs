//! The probes: TCP SYNs with TTL 1, sent from inside the probe's network
//! namespace, and what came back.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::verify::report::Answer;

/// The instance metadata address every cloud uses (docs/configuration.md, "The defaults, written out").
pub const METADATA_PROBE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80);
/// TEST-NET-1 (RFC 5737): never routed on the internet; TTL 1 keeps the
/// probes on this host anyway.
pub const SMTP_PROBE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
/// How long a probe waits for an answer: below Linux's initial SYN
/// retransmission timeout (1 s), so each probe is exactly one SYN.
pub const PROBE_WAIT: Duration = Duration::from_millis(900);

/// `count` TCP connection attempts to `dest` with TTL 1, at once; waits up
/// to `wait` for each to be answered.
pub fn send_syns(dest: SocketAddrV4, count: usize, wait: Duration) -> std::io::Result<Vec<Answer>> {
    let addr = SockAddr::from(SocketAddr::V4(dest));
    let mut sockets = Vec::with_capacity(count);
    let mut answers: Vec<Option<Answer>> = vec![None; count];
    for slot in answers.iter_mut() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_ttl_v4(1)?;
        s.set_nonblocking(true)?;
        match s.connect(&addr) {
            Ok(()) => *slot = Some(Answer::Answered("connected".into())),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        sockets.push(s);
    }
    let deadline = Instant::now() + wait;
    loop {
        let pending: Vec<usize> = (0..count).filter(|i| answers[*i].is_none()).collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if pending.is_empty() || left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|i| libc::pollfd {
                fd: sockets[*i].as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (k, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            let i = pending[k];
            answers[i] = Some(match sockets[i].take_error()? {
                None => Answer::Answered("connected".into()),
                // A TTL-1 SYN never reaches a server: a reset can only
                // come from the filter rejecting it at the bridge.
                Some(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Answer::Rejected,
                Some(e) => Answer::Answered(describe(&e)),
            });
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or(Answer::None))
        .collect())
}

fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        // What a TTL-1 SYN gets back from the host's forwarding path.
        Some(libc::EHOSTUNREACH) => "the host answered: time exceeded or host unreachable".into(),
        Some(libc::ENETUNREACH) => "the host answered: network unreachable".into(),
        _ => e.to_string(),
    }
}
