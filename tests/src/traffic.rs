//! Real-socket traffic between namespaces of a topology. Every helper has a
//! bounded timeout and only talks to addresses the caller passes in, which
//! for tests are addresses inside the test's own namespaces.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;
use crate::workers::Workers;

/// How long the server waits for a request on an accepted connection.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Accept/receive polling interval; bounds how long a guard's drop waits.
const POLL: Duration = Duration::from_millis(5);

fn setns_err(e: anyhow::Error) -> io::Error {
    io::Error::other(format!("{e:#}"))
}

/// Runs `during` while a probe GETs the metadata service
/// ([`crate::addrs::IMDS_V4`], port 80) from `ns` every 50 ms; returns what
/// `during` returned, the attempts and the successes.
pub fn with_probe<R>(ns: &NetNs, during: impl FnOnce() -> R) -> (R, u32, u32) {
    let stop = AtomicBool::new(false);
    let successes = AtomicU32::new(0);
    let attempts = AtomicU32::new(0);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                attempts.fetch_add(1, Ordering::Relaxed);
                if http_get(
                    ns,
                    crate::addrs::IMDS_V4,
                    80,
                    "/",
                    Duration::from_millis(250),
                )
                .is_ok()
                {
                    successes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let r = during();
        stop.store(true, Ordering::Relaxed);
        r
    });
    (r, attempts.into_inner(), successes.into_inner())
}

/// A TCP server running in a namespace (see [`tcp_server`]). Stops
/// accepting and closes its socket on drop.
#[derive(Debug)]
pub struct ServerGuard {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    _acceptor: Workers,
}

impl ServerGuard {
    /// The address the server listens on (the real port if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections on which some request bytes arrived and a response was
    /// sent.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Source addresses of the accepted connections, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_accepted(&self, n: usize, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.accepted() >= n)
    }
}

/// Listens on `addr:port` inside `ns` (port 0 picks a free one; see
/// [`ServerGuard::addr`]). Accepts connections in a background thread,
/// counts them, and answers anything it reads with a minimal
/// `HTTP/1.0 200 OK` response whose body starts with `ok`.
pub fn tcp_server(ns: &NetNs, addr: impl Into<IpAddr>, port: u16) -> Result<ServerGuard> {
    let sa = SocketAddr::new(addr.into(), port);
    let listener = ns
        .run_in(|| TcpListener::bind(sa))?
        .with_context(|| format!("binding TCP {sa} in netns {}", ns.name()))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let mut acceptor = Workers::new();
    {
        let (accepted, requests, peers) = (accepted.clone(), requests.clone(), peers.clone());
        acceptor.spawn(format!("tcp-server-{local}"), move |stop| {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        peers.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
                        let requests = requests.clone();
                        // Short-lived, bounded by SERVER_READ_TIMEOUT.
                        std::thread::spawn(move || {
                            if serve_one(stream, local).unwrap_or(false) {
                                requests.fetch_add(1, Ordering::SeqCst);
                            }
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        })?;
    }
    Ok(ServerGuard {
        addr: local,
        accepted,
        requests,
        peers,
        _acceptor: acceptor,
    })
}

/// Reads a request (up to the end of the headers, EOF, or 8 KiB) and
/// answers it. Returns whether anything was read and answered.
fn serve_one(mut stream: TcpStream, local: SocketAddr) -> io::Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(SERVER_READ_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVER_READ_TIMEOUT))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= 8192 {
            break;
        }
    }
    if buf.is_empty() {
        return Ok(false);
    }
    let body = format!("ok {local}\n");
    let resp = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes())?;
    stream.flush()?;
    Ok(true)
}

/// Opens (and closes) a TCP connection from inside `ns`. A dropped SYN shows
/// up as `ErrorKind::TimedOut`, a rejected one as `ConnectionRefused` or
/// `HostUnreachable`/`NetworkUnreachable` (ICMP).
pub fn tcp_connect(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    ns.run_in(|| TcpStream::connect_timeout(&addr, timeout).map(drop))
        .map_err(setns_err)?
}

/// `GET path` over HTTP/1.0 from inside `ns`; `timeout` bounds the connect
/// and each read/write. Returns the body of a 200 response; any other status
/// is an error. An I/O error stays in the error chain (see [`is_timeout`]).
pub fn http_get(
    ns: &NetNs,
    host: impl Into<IpAddr>,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<String> {
    let host = host.into();
    let sa = SocketAddr::new(host, port);
    let host_hdr = match host {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    let raw = ns
        .run_in(|| -> Result<Vec<u8>> {
            let mut s = TcpStream::connect_timeout(&sa, timeout)
                .with_context(|| format!("connecting to {sa}"))?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {host_hdr}\r\nUser-Agent: egress-tests\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .with_context(|| format!("sending request to {sa}"))?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)
                .with_context(|| format!("reading response from {sa}"))?;
            Ok(raw)
        })?
        .with_context(|| format!("GET http://{host_hdr}{path} from netns {}", ns.name()))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET http://{host_hdr}{path}: malformed response {text:?}"))?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("GET http://{host_hdr}{path}: no status line in {head:?}"))?;
    if status != 200 {
        bail!("GET http://{host_hdr}{path}: status {status}");
    }
    Ok(body.to_owned())
}

/// Whether an error (from [`http_get`] or others) was caused by an I/O
/// timeout, i.e. packets silently dropped.
pub fn is_timeout(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            )
        })
    })
}

/// One ICMP echo from inside `ns` with the `ping` binary (`ping -c 1`,
/// `-6` for IPv6), giving up after `timeout` (rounded up to whole seconds,
/// at least 1). Ok if a reply came back; the error carries ping's output.
pub fn ping(ns: &NetNs, addr: impl Into<IpAddr>, timeout: Duration) -> Result<()> {
    let addr = addr.into();
    if egress_devtools::machine::on_path("ping").is_none() {
        bail!("`ping` not found in PATH (Debian: apt-get install iputils-ping)");
    }
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let secs = secs.max(1).to_string();
    let fam = if addr.is_ipv6() { "-6" } else { "-4" };
    let a = addr.to_string();
    // -W: wait for the reply; -w: overall deadline (keeps the total bounded).
    let out = ns.exec_unchecked(&["ping", fam, "-n", "-c", "1", "-W", &secs, "-w", &secs, &a])?;
    if !out.status.success() {
        bail!(
            "ping {a} from netns {} failed ({}): {}{}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A UDP socket in a namespace counting what it receives (see
/// [`udp_sink`]). Stops on drop.
#[derive(Debug)]
pub struct UdpSinkGuard {
    addr: SocketAddr,
    datagrams: Arc<AtomicUsize>,
    bytes: Arc<AtomicU64>,
    _receiver: Workers,
}

impl UdpSinkGuard {
    /// The bound address (the real port if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn count(&self) -> usize {
        self.datagrams.load(Ordering::SeqCst)
    }

    /// Payload bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` datagrams arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.count() >= n)
    }
}

/// Binds UDP `addr:port` inside `ns` and counts datagrams in a background
/// thread.
pub fn udp_sink(ns: &NetNs, addr: impl Into<IpAddr>, port: u16) -> Result<UdpSinkGuard> {
    let sa = SocketAddr::new(addr.into(), port);
    let sock = ns
        .run_in(|| UdpSocket::bind(sa))?
        .with_context(|| format!("binding UDP {sa} in netns {}", ns.name()))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let local = sock.local_addr()?;
    let datagrams = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut receiver = Workers::new();
    {
        let (datagrams, bytes) = (datagrams.clone(), bytes.clone());
        receiver.spawn(format!("udp-sink-{local}"), move |stop| {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    datagrams.fetch_add(1, Ordering::SeqCst);
                    bytes.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        })?;
    }
    Ok(UdpSinkGuard {
        addr: local,
        datagrams,
        bytes,
        _receiver: receiver,
    })
}

/// Sends `count` datagrams carrying `payload` to `dest` from an ephemeral
/// port inside `ns`. Returns how many `send_to` calls succeeded (UDP: that
/// says nothing about delivery; use a [`UdpSinkGuard`]).
pub fn udp_send(ns: &NetNs, dest: SocketAddr, payload: &[u8], count: usize) -> io::Result<usize> {
    ns.run_in(|| {
        let bind: SocketAddr = match dest {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(bind)?;
        let mut sent = 0;
        for _ in 0..count {
            if sock.send_to(payload, dest).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })
    .map_err(setns_err)?
}

/// A UDP responder in a namespace (see [`udp_echo`]): the stand-in for a
/// resolver or a time server. Stops on drop.
#[derive(Debug)]
pub struct UdpEchoGuard {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    _responder: Workers,
}

impl UdpEchoGuard {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

/// Binds UDP `addr:port` inside `ns` and sends every datagram back to its
/// sender, prefixed with `ok `.
pub fn udp_echo(ns: &NetNs, addr: impl Into<IpAddr>, port: u16) -> Result<UdpEchoGuard> {
    let sa = SocketAddr::new(addr.into(), port);
    let sock = ns
        .run_in(|| UdpSocket::bind(sa))?
        .with_context(|| format!("binding UDP {sa} in netns {}", ns.name()))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let local = sock.local_addr()?;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut responder = Workers::new();
    {
        let answered = answered.clone();
        responder.spawn(format!("udp-echo-{local}"), move |stop| {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let mut reply = b"ok ".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    if sock.send_to(&reply, peer).is_ok() {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })?;
    }
    Ok(UdpEchoGuard {
        addr: local,
        answered,
        _responder: responder,
    })
}

/// One request over a *connected* UDP socket from inside `ns`: send
/// `payload` to `dest`, wait up to `timeout` for the answer. An ICMP port
/// unreachable coming back shows up as `ErrorKind::ConnectionRefused` (on
/// a connected socket the kernel reports it, RFC 1122 4.1.3.3); silence as
/// `TimedOut`/`WouldBlock`.
pub fn udp_request(
    ns: &NetNs,
    dest: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    ns.run_in(|| {
        let bind: SocketAddr = match dest {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(dest)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send(payload)?;
        let mut buf = vec![0u8; 2048];
        let n = sock.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
    .map_err(setns_err)?
}
