//! One socket operation from inside a cgroup, for the cgroup hooks' tests:
//! joins the cgroup, does the operation, prints what it got as one JSON line
//! (`{"op":..,"ok":bool,"errno":N,"error":".."}`) and exits 0 whatever
//! happened. Run in a test's network namespace (`nsenter --net=...`), like a
//! process of a host-network container.
//!
//! ```text
//! egress-netprobe --cgroup DIR tcp ADDR PORT         connect(), 2 s
//! egress-netprobe --cgroup DIR tcp-nb ADDR PORT      non-blocking connect(): refused at once or in progress
//! egress-netprobe --cgroup DIR udp-sendto ADDR PORT  sendto() on an unconnected socket
//! egress-netprobe --cgroup DIR udp-connect ADDR PORT connect(), then send()
//! egress-netprobe --cgroup DIR udp-connected-sendto ADDR PORT ADDR2 PORT2
//!                                                    connect() to the first, send() there, then
//!                                                    sendto() the second on the same socket
//! egress-netprobe --cgroup DIR ping ADDR             one ICMP echo on a raw socket, 1 s for the reply
//! egress-netprobe --cgroup DIR tcp-routed ADDR PORT HOP
//!                                                    connect(), 1 s, through the source route HOP:
//!                                                    IP_OPTIONS LSRR for IPv4, IPV6_RTHDR type 4
//!                                                    (segment routing) for IPv6
//! ```
//!
//! ADDR may be IPv4 or IPv6 (an IPv4-mapped `::ffff:a.b.c.d` goes through an
//! IPv6 socket).

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd},
    time::{Duration, Instant},
};

fn report(op: &str, r: std::io::Result<String>, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match r {
        Ok(detail) => println!(
            "{{\"op\":\"{op}\",\"ok\":true,\"errno\":0,\"detail\":{detail:?},\"ms\":{ms:.3}}}"
        ),
        Err(e) => println!(
            "{{\"op\":\"{op}\",\"ok\":false,\"errno\":{},\"error\":{:?},\"ms\":{ms:.3}}}",
            e.raw_os_error().unwrap_or(-1),
            e.to_string()
        ),
    }
}

fn join_cgroup(dir: &str) -> std::io::Result<()> {
    std::fs::write(
        format!("{dir}/cgroup.procs"),
        std::process::id().to_string(),
    )
}

fn ping(addr: IpAddr) -> std::io::Result<String> {
    let IpAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("ping: IPv4 only"));
    };
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(s);
        // type 8 (echo request), code 0, checksum, id, seq.
        let mut pkt = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.octets()),
            },
            sin_zero: [0; 8],
        };
        let r = libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&dst as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
        let mut buf = [0u8; 256];
        loop {
            let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = n as usize;
            // An IPv4 header, then the ICMP message: echo reply is type 0.
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n > ihl && buf[ihl] == 0 {
                return Ok("echo reply".into());
            }
        }
    }
}

/// The Internet checksum (RFC 1071) of `data` (even length).
fn checksum(data: &[u8]) -> u16 {
    let mut s: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn tcp_nonblocking(sa: SocketAddr) -> std::io::Result<String> {
    let domain = if sa.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let s = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(s);
        let (storage, len) = sockaddr(sa);
        let r = libc::connect(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        );
        if r == 0 {
            return Ok("connected".into());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            return Ok("in progress".into());
        }
        Err(e)
    }
}

/// A TCP `connect()` to `sa` whose socket carries a source route through
/// `hop`: the kernel sends the SYN to `hop` with `sa`'s address in the
/// route (ip_options_build, ipv6_push_rthdr4).
fn tcp_routed(sa: SocketAddr, hop: IpAddr) -> std::io::Result<String> {
    let (domain, level, name, route) = match hop {
        IpAddr::V4(h) => {
            // LSRR: type, length, pointer 4, the first hop, then a slot the
            // kernel fills with the destination; a no-op pads it to 12.
            let mut o = vec![131u8, 11, 4];
            o.extend_from_slice(&h.octets());
            o.extend_from_slice(&[0; 4]);
            o.push(1);
            (libc::AF_INET, libc::IPPROTO_IP, libc::IP_OPTIONS, o)
        }
        IpAddr::V6(h) => {
            // RFC 8754: next header, length 4 (two segments), type 4,
            // segments left 1, last entry 1, flags, tag; segment 0 (the
            // kernel writes the destination there), segment 1 (the hop).
            let mut o = vec![0u8, 4, 4, 1, 1, 0, 0, 0];
            o.extend_from_slice(&[0; 16]);
            o.extend_from_slice(&h.octets());
            (libc::AF_INET6, libc::IPPROTO_IPV6, libc::IPV6_RTHDR, o)
        }
    };
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let s = libc::socket(domain, libc::SOCK_STREAM, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(s);
        if libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            route.as_ptr().cast(),
            route.len() as libc::socklen_t,
        ) != 0
        {
            return Err(std::io::Error::other(format!(
                "setsockopt: {}",
                std::io::Error::last_os_error()
            )));
        }
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
        let (storage, len) = sockaddr(sa);
        if libc::connect(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        ) == 0
        {
            return Ok("connected".into());
        }
        Err(std::io::Error::last_os_error())
    }
}

fn sockaddr(sa: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match sa {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cgroup, rest) = match args.as_slice() {
        [flag, dir, rest @ ..] if flag == "--cgroup" => (Some(dir.as_str()), rest),
        rest => (None, rest),
    };
    if let Some(dir) = cgroup
        && let Err(e) = join_cgroup(dir)
    {
        report("join", Err(e), Instant::now());
        return;
    }
    let started = Instant::now();
    let addr = |i: usize| -> IpAddr {
        rest.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("usage: see the module docs ({rest:?})"))
    };
    let port = |i: usize| -> u16 {
        rest.get(i)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("usage: see the module docs ({rest:?})"))
    };
    let op = rest.first().map(String::as_str).unwrap_or("");
    let result = match op {
        "tcp" => {
            let sa = SocketAddr::new(addr(1), port(2));
            TcpStream::connect_timeout(&sa, Duration::from_secs(2)).map(|mut s| {
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                body.lines().next().unwrap_or_default().to_owned()
            })
        }
        "tcp-nb" => tcp_nonblocking(SocketAddr::new(addr(1), port(2))),
        "udp-sendto" | "udp-connect" => {
            let sa = SocketAddr::new(addr(1), port(2));
            let bind: SocketAddr = if sa.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            UdpSocket::bind(bind).and_then(|s| {
                if op == "udp-connect" {
                    s.connect(sa)?;
                    s.send(b"probe").map(|n| format!("sent {n}"))
                } else {
                    s.send_to(b"probe", sa).map(|n| format!("sent {n}"))
                }
            })
        }
        "udp-connected-sendto" => {
            let peer = SocketAddr::new(addr(1), port(2));
            let other = SocketAddr::new(addr(3), port(4));
            let bind: SocketAddr = if peer.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            UdpSocket::bind(bind).and_then(|s| {
                s.connect(peer)?;
                let first = s.send(b"probe")?;
                s.send_to(b"probe", other)
                    .map(|n| format!("sent {first} to the peer, {n} to the other"))
            })
        }
        "ping" => ping(addr(1)),
        "tcp-routed" => tcp_routed(SocketAddr::new(addr(1), port(2)), addr(3)),
        other => Err(std::io::Error::other(format!(
            "unknown operation {other:?}"
        ))),
    };
    report(op, result, started);
}
