//! Identity: the program on each container's veth knows who sent a packet,
//! whatever the packet says. In a Docker-like topology of namespaces: a
//! container forging another's source address charges its own SMTP bucket
//! and is named in the drop event; the hand-off mark cannot be forged from
//! a container's namespace; each packet is judged once.

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsRawFd,
    time::Duration,
};

use crate::common::*;
use egress_ebpf_common::endpoint::HANDOFF_MARK;
use egress_tests::{
    BpffsMount, LoaderProcess, NetNs, addrs,
    frames::{V4, ethernet, tcp},
    require_privileges,
    topology::Topology,
    traffic::{http_get, tcp_connect, tcp_server},
    wait_until,
    wire::{Layout, mac, send_frames},
};
use serde_json::Value;

const SYN: u8 = 0x02;
/// Below the 1 s initial SYN retransmission: one attempt is one SYN.
const ATTEMPT: Duration = Duration::from_millis(500);

/// The `endpoints[]` entry of `counters --json` for veth `veth`.
fn endpoint<'a>(c: &'a Value, veth: &str) -> Option<&'a Value> {
    c["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["veth"] == veth)
}

fn endpoint_packets(c: &Value, veth: &str, verdict: &str) -> u64 {
    endpoint(c, veth)
        .and_then(|e| e["counters"].as_array())
        .and_then(|a| a.iter().find(|x| x["name"] == verdict))
        .and_then(|x| x["packets"].as_u64())
        .unwrap_or_else(|| panic!("no endpoint {veth} counter {verdict} in {c}"))
}

/// Waits until `counters --json` lists every one of `veths` as an endpoint
/// and each has our program on its TCX ingress.
fn wait_endpoints(loader: &LoaderProcess, veths: &[&str]) {
    let ok = wait_until(Duration::from_secs(10), || {
        loader
            .cli_json("counters", &[])
            .is_ok_and(|c| veths.iter().all(|v| endpoint(&c, v).is_some()))
    });
    assert!(
        ok,
        "endpoints {veths:?} not attached:\n{}\n{}",
        loader
            .cli_json("counters", &[])
            .map(|c| c.to_string())
            .unwrap_or_default(),
        loader.log()
    );
}

/// Drop events (JSON lines) the loader wrote to its log.
fn events(loader: &LoaderProcess) -> Vec<Value> {
    loader
        .log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("verdict").is_some())
        .collect()
}

/// Raw TCP SYNs from `from` (its own MACs, to the bridge's) carrying `src`
/// as their source address.
fn forged_syns(topo: &Topology, from: &NetNs, src: Ipv4Addr, dst: Ipv4Addr, port: u16, n: u16) {
    let bridge_mac = mac(topo.host(), "docker0").unwrap();
    let own_mac = mac(from, "eth0").unwrap();
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut ip = V4::new(dst, 6);
            ip.src = src;
            ip.id = 0x4000 + i;
            let mut p = ip.header(20);
            p.extend_from_slice(&tcp(41000 + i, port, SYN));
            let mut f = ethernet(0x0800, &[], &p);
            f[0..6].copy_from_slice(&bridge_mac);
            f[6..12].copy_from_slice(&own_mac);
            f
        })
        .collect();
    send_frames(from, "eth0", &frames, Layout::Linear).unwrap();
}

#[test]
fn a_forged_source_address_charges_the_forger() {
    require_privileges!();
    let topo = Topology::docker_like_with("idfrg", 2).unwrap();
    let (a, b) = (topo.container(0), topo.container(1));
    let smtp = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let dest = SocketAddr::new(addrs::SMTP_V4.into(), 25);
    let bpffs = BpffsMount::new();
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--scope",
            "per-container",
            "--smtp-burst",
            "2",
            "--smtp-rate",
            "1/hour",
        ],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    wait_endpoints(&loader, &[a.host_veth(), b.host_veth()]);

    // A sends ten SMTP SYNs with B's source address.
    forged_syns(&topo, a.ns(), b.ipv4(), addrs::SMTP_V4, 25, 10);
    std::thread::sleep(Duration::from_millis(200));

    // B keeps its whole burst.
    for i in 0..2 {
        tcp_connect(b.ns(), dest, ATTEMPT)
            .unwrap_or_else(|e| panic!("B's attempt {} within its own burst: {e}", i + 1));
    }
    // A's bucket was charged: A's own attempt is over the rate.
    let err = tcp_connect(a.ns(), dest, ATTEMPT).expect_err("A's bucket must be spent");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(smtp.wait_accepted(2, REACHABLE));

    let c = counters(&loader);
    // Charged to the sender's endpoint: 2 of A's forged SYNs fit its burst.
    assert_eq!(
        endpoint_packets(&c, a.host_veth(), "smtp_allowed"),
        2,
        "{c}"
    );
    assert_eq!(
        endpoint_packets(&c, a.host_veth(), "smtp_limited"),
        9,
        "{c}"
    );
    assert_eq!(
        endpoint_packets(&c, b.host_veth(), "smtp_allowed"),
        2,
        "{c}"
    );
    assert_eq!(
        endpoint_packets(&c, b.host_veth(), "smtp_limited"),
        0,
        "{c}"
    );
    // Each packet judged once: the bridge handed them on uncounted.
    assert_eq!(packets(&c, "smtp_allowed"), 4, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 9, "{c}");

    // The drop events of the forged SYNs name A's veth, and keep B's
    // address as the source.
    let ok = wait_until(Duration::from_secs(3), || {
        events(&loader)
            .iter()
            .filter(|e| e["verdict"] == "smtp_limited")
            .count()
            >= 9
    });
    assert!(ok, "events missing:\n{}", loader.log());
    let forged: Vec<Value> = events(&loader)
        .into_iter()
        .filter(|e| e["verdict"] == "smtp_limited" && e["src"] == b.ipv4().to_string())
        .collect();
    assert_eq!(forged.len(), 8, "{forged:?}");
    for e in &forged {
        assert_eq!(e["interface"], a.host_veth(), "{e}");
        assert_eq!(e["endpoint"]["veth"], a.host_veth(), "{e}");
    }
    assert!(loader.is_running(), "{}", loader.log());
}

/// `setsockopt(SO_MARK)` needs CAP_NET_ADMIN in the socket's namespace: a
/// container with it can mark its packets as it likes.
fn connect_with_mark(ns: &NetNs, dest: SocketAddr, mark: u32) -> std::io::Result<()> {
    ns.run_in(move || {
        let s = socket_with_mark(mark)?;
        let addr = match dest {
            SocketAddr::V4(v4) => v4,
            _ => unreachable!(),
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let r = unsafe {
            libc::connect(
                s.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let n = unsafe { libc::poll(&mut pfd, 1, ATTEMPT.as_millis() as i32) };
        if n == 0 {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut err: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as u32;
        unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if err == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(err))
        }
    })
    .expect("setns")
}

fn socket_with_mark(mark: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let s = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            size_of::<u32>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

fn metadata_get(ns: &NetNs) -> anyhow::Result<String> {
    http_get(ns, addrs::IMDS_V4, 80, "/", DROPPED)
}

/// The hand-off mark tells the bridge program "judged already". Set in a
/// container's namespace (SO_MARK, iptables MARK), it is cleared when the
/// packet crosses into the host (`skb_scrub_packet`), so the bridge still
/// judges.
#[test]
fn a_container_cannot_forge_the_handoff_mark() {
    require_privileges!();
    let topo = Topology::docker_like_with("idmrk", 1).unwrap();
    let c = topo.container(0);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let dest = SocketAddr::new(addrs::IMDS_V4.into(), 80);
    let bpffs = BpffsMount::new();
    // The bridge alone judges: no endpoint program to hide behind.
    let mut loader = start_loader(&topo, &bpffs, &["--no-endpoints"]);
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let blocked_before = packets(&counters(&loader), "metadata_blocked");

    // SO_MARK with the hand-off bit (and every other bit) from the container.
    for mark in [HANDOFF_MARK, u32::MAX] {
        let r = connect_with_mark(c.ns(), dest, mark);
        assert!(
            // Judged by the bridge, whose built-in rule rejects: refused.
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "SO_MARK {mark:#x}: {r:?}"
        );
    }
    // An iptables MARK rule in the container's own namespace marks every
    // packet it sends (the kernel here has no tc skbedit action).
    let hex = format!("{HANDOFF_MARK:#x}");
    c.ns()
        .exec(&[
            "iptables",
            "-t",
            "mangle",
            "-A",
            "OUTPUT",
            "-j",
            "MARK",
            "--set-mark",
            &hex,
        ])
        .unwrap();
    assert!(
        metadata_get(c.ns()).is_err(),
        "marked by iptables in the container"
    );
    let blocked = packets(&counters(&loader), "metadata_blocked") - blocked_before;
    // Each attempt's SYN reached the bridge unmarked and was judged there.
    assert!(blocked >= 3, "the bridge judged {blocked} of 3 attempts");
    // (That the bridge program believes the bit when it does arrive, and
    // clears it, is prog_test_run.rs's `the_bridge_hands_on_a_marked_packet`.)
}
