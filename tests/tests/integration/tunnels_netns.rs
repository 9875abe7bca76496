//! Inner packets of tunnels the host decapsulates (issue 25, item 2). A
//! container sends, to its bridge's address on the host, an ordinary UDP
//! datagram that carries an encapsulated packet to the metadata address:
//! VXLAN to the host's vxlan device, or flannel's UDP backend's shape (a
//! daemon on the host writes the datagram's payload into a tun device).
//! The host decapsulates it and routes the inner packet. Each test first
//! shows the inner packet reaching the metadata stand-in without the
//! filter (the setup can leak, so the test can fail), then that the
//! loader finds the device by its kind and judges what it hands up.
//!
//! IPIP, SIT, GRE and ip6tnl are not in this kernel (booted `nomodule`,
//! not built in): which program each kind gets is unit-tested on link
//! kinds (egress-loader's endpoint::tunnel); vxlan and tun are tested here.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use egress_tests::frames::{self, IPPROTO_UDP, V4, V6};
use egress_tests::traffic::{udp_send, udp_sink};
use egress_tests::{BpffsMount, NetNs, addrs, require_privileges, wait_until};
use serde_json::Value;

/// Where the vxlan test's loader serves metrics, in its own host namespace.
const METRICS_PORT: u16 = 9185;
/// VXLAN's IANA port; flannel's vxlan backend uses 8472, same shape.
const VXLAN_PORT: u16 = 4789;
const VNI: u32 = 42;
/// flannel's UDP backend port (its daemon reads here, writes to flannel0).
const FLANNEL_UDP_PORT: u16 = 8285;
/// The port the stand-ins listen on behind the addresses.
const SINK_PORT: u16 = 9999;
/// How long a datagram that got through takes at most (all local).
const ARRIVES: Duration = Duration::from_secs(3);
/// How long to wait before saying a datagram did not arrive.
const STAYS_AWAY: Duration = Duration::from_millis(800);
/// The vxlan device's MAC: inner frames are addressed to it, as to a
/// flannel.1 whose FDB names this node.
const VX_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x42, 0x01];

/// An inner IPv4/UDP packet from the container's address to `dst`.
fn inner_ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut ip = V4::new(dst, IPPROTO_UDP);
    ip.src = src;
    // UDP checksum 0: "none" over IPv4, accepted by the receiver.
    let l4 = frames::udp(40000, SINK_PORT, payload);
    let mut p = ip.header(l4.len());
    p.extend_from_slice(&l4);
    p
}

/// An inner IPv6/UDP packet from `src` to `dst`, with the checksum IPv6
/// requires (RFC 8200: a zero UDP checksum is dropped).
fn inner_ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut ip = V6::new(dst, IPPROTO_UDP);
    ip.src = src;
    let mut l4 = frames::udp(40000, SINK_PORT, payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&l4);
    let sum = match frames::checksum(&pseudo) {
        0 => 0xffff,
        s => s,
    };
    l4[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut p = ip.header(l4.len());
    p.extend_from_slice(&l4);
    p
}

/// The VXLAN payload (header, inner Ethernet frame) of an inner IPv4
/// packet.
fn vxlan_payload(inner_ip: &[u8]) -> Vec<u8> {
    vxlan_payload_of(0x0800, inner_ip)
}

fn vxlan_payload_of(ether_type: u16, inner_ip: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0];
    v.extend_from_slice(&(VNI << 8).to_be_bytes());
    v.extend_from_slice(&VX_MAC);
    v.extend_from_slice(&frames::SRC_MAC);
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(inner_ip);
    v
}

/// `ip link add NAME type vxlan id 42 dstport 4789 local <docker0's address>
/// dev docker0 nolearning`, up, with [`VX_MAC`], in the host namespace.
fn add_vxlan(host: &NetNs, name: &str) {
    let local = addrs::DOCKER0_V4.to_string();
    let mac = VX_MAC.map(|b| format!("{b:02x}")).join(":");
    let id = VNI.to_string();
    let port = VXLAN_PORT.to_string();
    for args in [
        vec![
            "link",
            "add",
            name,
            "address",
            &mac,
            "type",
            "vxlan",
            "id",
            &id,
            "dstport",
            &port,
            "local",
            &local,
            "dev",
            addrs::DOCKER0,
            "nolearning",
        ],
        vec!["link", "set", name, "up"],
    ] {
        host.ip(&args).unwrap_or_else(|e| panic!("{e:#}"));
    }
    // The inner source is the container's address, whose route is docker0:
    // loose as the overlays configure it, not strict.
    for key in ["all", name] {
        // Slashes: a dot in the device's name would split the key.
        host.sysctl(&format!("net/ipv4/conf/{key}/rp_filter"), "0")
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// `counters --json`'s entry for interface `iface`: packets of `verdict`.
fn iface_packets(c: &Value, iface: &str, verdict: &str) -> u64 {
    c["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["interface"] == iface))
        .and_then(|i| i["counters"].as_array())
        .and_then(|a| a.iter().find(|x| x["name"] == verdict))
        .and_then(|x| x["packets"].as_u64())
        .unwrap_or(0)
}

fn role(st: &Value, iface: &str) -> Value {
    interface(st, iface).map_or(Value::Null, |i| i["role"].clone())
}

/// flannel's own name for its VXLAN device: a dot in the name, which bpffs
/// refuses in a pin's name (kernel::pins encodes it).
const VXLAN_DEV: &str = "flannel.1";

#[test]
fn vxlan_inner_packets_are_judged_on_the_vxlan_device() {
    require_privileges!();
    let topo = topology_with("tvxl", 1);
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0);
    add_vxlan(topo.host(), VXLAN_DEV);
    let imds = udp_sink(topo.cloud(), addrs::IMDS_V4, SINK_PORT).unwrap();
    let web = udp_sink(topo.cloud(), addrs::SMTP_V4, SINK_PORT).unwrap();
    let outer = SocketAddr::new(addrs::DOCKER0_V4.into(), VXLAN_PORT);
    let to_imds = vxlan_payload(&inner_ipv4_udp(c0.ipv4(), addrs::IMDS_V4, b"imds"));
    let to_web = vxlan_payload(&inner_ipv4_udp(c0.ipv4(), addrs::SMTP_V4, b"web"));

    // Without the filter the inner packet reaches the metadata stand-in.
    udp_send(c0.ns(), outer, &to_imds, 1).unwrap();
    assert!(
        imds.wait_for(1, ARRIVES),
        "the setup does not leak: the inner packet never reached 169.254.169.254\n{}",
        topo.diagnostics()
    );

    let metrics_addr = format!("127.0.0.1:{METRICS_PORT}");
    let mut loader = start_loader(&topo, &bpffs, &["--metrics-addr", &metrics_addr]);
    let st = wait_attached(&mut loader, VXLAN_DEV, READY_TIMEOUT);
    assert_eq!(role(&st, VXLAN_DEV), "tunnel", "{st}");
    let before = imds.count();

    udp_send(c0.ns(), outer, &to_imds, 3).unwrap();
    udp_send(c0.ns(), outer, &to_web, 3).unwrap();
    assert!(
        web.wait_for(3, ARRIVES),
        "an allowed inner packet was dropped"
    );
    std::thread::sleep(STAYS_AWAY);
    assert_eq!(
        imds.count(),
        before,
        "an inner packet reached the metadata address through {VXLAN_DEV}"
    );

    let c = counters(&loader);
    assert!(iface_packets(&c, VXLAN_DEV, "metadata_blocked") >= 3, "{c}");
    assert!(iface_packets(&c, VXLAN_DEV, "passed") >= 3, "{c}");
    // The default rule rejects; on a tunnel no reply goes back.
    assert!(c["replies"]["refused"].as_u64().unwrap_or(0) >= 3, "{c}");
    assert_eq!(c["replies"]["sent"], 0, "{c}");
    // /metrics counts per interface as for the bridges.
    let m = metrics_text(topo.host(), METRICS_PORT);
    assert!(
        m.lines().any(|l| l.starts_with("egress_packets_total{")
            && l.contains("verdict=\"metadata_blocked\"")
            && l.contains("interface=\"flannel.1\"")),
        "{m}"
    );
    assert!(
        m.contains("egress_interface_attached{interface=\"flannel.1\"} 1"),
        "{m}"
    );
    assert_tunnel_verified(&loader, VXLAN_DEV, "ethernet");
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}

#[test]
fn vxlan_carrying_ipv6_is_judged() {
    require_privileges!();
    let topo = topology_with("tvx6", 1);
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0);
    add_vxlan(topo.host(), "vx6");
    topo.host()
        .wait_ipv6_settled(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let imds = udp_sink(topo.cloud(), addrs::IMDS_V6, SINK_PORT).unwrap();
    let web = udp_sink(topo.cloud(), addrs::SMTP_V6, SINK_PORT).unwrap();
    let outer = SocketAddr::new(addrs::DOCKER0_V4.into(), VXLAN_PORT);
    let to_imds = vxlan_payload_of(0x86dd, &inner_ipv6_udp(c0.ipv6(), addrs::IMDS_V6, b"imds"));
    let to_web = vxlan_payload_of(0x86dd, &inner_ipv6_udp(c0.ipv6(), addrs::SMTP_V6, b"web"));

    udp_send(c0.ns(), outer, &to_imds, 1).unwrap();
    assert!(
        imds.wait_for(1, ARRIVES),
        "the setup does not leak: the inner packet never reached fd00:ec2::254\n{}",
        topo.diagnostics()
    );

    let mut loader = start_loader(&topo, &bpffs, &[]);
    wait_attached(&mut loader, "vx6", READY_TIMEOUT);
    let before = imds.count();
    udp_send(c0.ns(), outer, &to_imds, 3).unwrap();
    udp_send(c0.ns(), outer, &to_web, 3).unwrap();
    assert!(
        web.wait_for(3, ARRIVES),
        "an allowed inner packet was dropped"
    );
    std::thread::sleep(STAYS_AWAY);
    assert_eq!(
        imds.count(),
        before,
        "an inner IPv6 packet reached the metadata address through vx6"
    );
    let c = counters(&loader);
    assert!(iface_packets(&c, "vx6", "metadata_blocked") >= 3, "{c}");
    assert!(rule_packets(&c, "fd00:ec2::254/128") >= 3, "{c}");
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}

#[test]
fn tunnel_device_created_after_the_start_is_attached_and_forgotten_when_gone() {
    require_privileges!();
    let topo = topology_with("tvxf", 1);
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0);
    let imds = udp_sink(topo.cloud(), addrs::IMDS_V4, SINK_PORT).unwrap();
    let mut loader = start_loader(&topo, &bpffs, &[]);
    wait_attached(&mut loader, addrs::DOCKER0, READY_TIMEOUT);

    add_vxlan(topo.host(), "vxlate");
    let st = wait_attached(&mut loader, "vxlate", Duration::from_secs(10));
    assert_eq!(role(&st, "vxlate"), "tunnel", "{st}");
    let outer = SocketAddr::new(addrs::DOCKER0_V4.into(), VXLAN_PORT);
    let to_imds = vxlan_payload(&inner_ipv4_udp(c0.ipv4(), addrs::IMDS_V4, b"imds"));
    udp_send(c0.ns(), outer, &to_imds, 2).unwrap();
    std::thread::sleep(STAYS_AWAY);
    assert_eq!(imds.count(), 0, "an inner packet got through vxlate");
    let c = counters(&loader);
    assert!(iface_packets(&c, "vxlate", "metadata_blocked") >= 2, "{c}");

    topo.host()
        .ip(&["link", "del", "vxlate"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        wait_until(Duration::from_secs(10), || interface(
            &status(&loader),
            "vxlate"
        )
        .is_none()),
        "the gone device's link is still listed: {}",
        status(&loader)
    );
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}

/// A tun device in `ns` (IFF_TUN | IFF_NO_PI: bare IP packets, as flannel0),
/// up; the device lives as long as the returned file.
fn open_tun(ns: &NetNs, name: &str) -> std::fs::File {
    let name_c = name.to_owned();
    let file = ns
        .run_in(move || -> std::io::Result<std::fs::File> {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")?;
            // struct ifreq: the name, then ifr_flags.
            let mut ifr = [0u8; 40];
            ifr[..name_c.len()].copy_from_slice(name_c.as_bytes());
            let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
            ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
            // TUNSETIFF = _IOW('T', 202, int)
            let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x400454ca, ifr.as_mut_ptr()) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f)
        })
        .expect("setns")
        .unwrap_or_else(|e| panic!("creating tun device {name}: {e}"));
    ns.ip(&["link", "set", name, "up"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    for key in ["all", name] {
        ns.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    file
}

/// flannel's UDP backend in miniature: a daemon in the host namespace that
/// reads datagrams on the host's address and writes each payload (an inner
/// IP packet) into the tun device. Stops when dropped.
struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(ns: &NetNs, at: SocketAddr, tun: std::fs::File) -> Self {
        let sock = ns
            .run_in(move || UdpSocket::bind(at))
            .expect("setns")
            .unwrap_or_else(|e| panic!("binding {at}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut tun = tun;
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let _ = tun.write(&buf[..n]);
                }
            }
        });
        Forwarder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn tun_device_fed_by_a_daemon_is_judged_as_ip() {
    require_privileges!();
    let topo = topology_with("ttun", 1);
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0);
    let tun = open_tun(topo.host(), "ftun0");
    let at = SocketAddr::new(addrs::DOCKER0_V4.into(), FLANNEL_UDP_PORT);
    let _daemon = Forwarder::start(topo.host(), at, tun);
    let imds = udp_sink(topo.cloud(), addrs::IMDS_V4, SINK_PORT).unwrap();
    let web = udp_sink(topo.cloud(), addrs::SMTP_V4, SINK_PORT).unwrap();
    let to_imds = inner_ipv4_udp(c0.ipv4(), addrs::IMDS_V4, b"imds");
    let to_web = inner_ipv4_udp(c0.ipv4(), addrs::SMTP_V4, b"web");

    udp_send(c0.ns(), at, &to_imds, 1).unwrap();
    assert!(
        imds.wait_for(1, ARRIVES),
        "the setup does not leak: the inner packet never reached 169.254.169.254\n{}",
        topo.diagnostics()
    );

    let mut loader = start_loader(&topo, &bpffs, &[]);
    let st = wait_attached(&mut loader, "ftun0", READY_TIMEOUT);
    assert_eq!(role(&st, "ftun0"), "tunnel", "{st}");
    let before = imds.count();
    udp_send(c0.ns(), at, &to_imds, 3).unwrap();
    udp_send(c0.ns(), at, &to_web, 3).unwrap();
    assert!(
        web.wait_for(3, ARRIVES),
        "an allowed inner packet was dropped"
    );
    std::thread::sleep(STAYS_AWAY);
    assert_eq!(
        imds.count(),
        before,
        "an inner packet reached the metadata address through the tun device"
    );
    let c = counters(&loader);
    assert!(iface_packets(&c, "ftun0", "metadata_blocked") >= 3, "{c}");
    assert!(iface_packets(&c, "ftun0", "passed") >= 3, "{c}");
    assert_tunnel_verified(&loader, "ftun0", "ip");
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}

#[test]
fn no_tunnels_leaves_the_devices_alone() {
    require_privileges!();
    let topo = topology_with("tvxn", 1);
    let bpffs = BpffsMount::new();
    add_vxlan(topo.host(), "vx0");
    let mut loader = start_loader(&topo, &bpffs, &["--no-tunnels"]);
    let st = wait_attached(&mut loader, addrs::DOCKER0, READY_TIMEOUT);
    assert!(interface(&st, "vx0").is_none(), "{st}");
    // Never a silent gap: verify names the device it leaves unjudged.
    let out = loader
        .cli("verify", &["--iface", "vx0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  vx0") && text.contains("not attached"),
        "{text}"
    );
}

/// `verify` passes the tunnel `iface`: its program, run as on it on an
/// inner SYN of `layer`'s shape, drops it and counts it there.
fn assert_tunnel_verified(loader: &egress_tests::LoaderProcess, iface: &str, layer: &str) {
    let v = loader
        .cli_json("verify", &["--iface", iface])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let t = v["tunnels"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["interface"] == iface))
        .unwrap_or_else(|| panic!("verify did not probe {iface}: {v}"));
    assert_eq!(t["problems"], serde_json::json!([]), "{v}");
    assert_eq!(t["layer"], layer, "{v}");
    assert_eq!(t["dropped"], true, "{v}");
    assert_eq!(t["metadata_blocked"], 1, "{v}");
    let out = loader
        .cli("verify", &["--iface", iface])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success() && text.contains(&format!("PASS  {iface}")),
        "{text}"
    );
}

#[test]
fn turning_tunnels_off_in_the_followed_file_detaches_and_on_again_attaches() {
    require_privileges!();
    let topo = topology_with("tvxr", 1);
    let bpffs = BpffsMount::new();
    add_vxlan(topo.host(), "vx0");
    let dir = egress_tests::TempDir::new("tvxr");
    let config = dir.join("config.toml");
    std::fs::write(&config, "[attach]\ntunnels = true\n").unwrap();
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--config",
            config.to_str().unwrap(),
            "--events-socket",
            "none",
        ],
    );
    wait_attached(&mut loader, "vx0", READY_TIMEOUT);
    let vx0_programs = || {
        topo.host()
            .run_in(|| {
                aya::programs::SchedClassifier::query_tcx(
                    "vx0",
                    aya::programs::TcAttachType::Ingress,
                )
            })
            .expect("setns")
            .map(|(_, p)| p.len())
            .unwrap_or(0)
    };
    assert_eq!(vx0_programs(), 1);

    std::fs::write(&config, "[attach]\ntunnels = false\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || vx0_programs() == 0
            && interface(&status(&loader), "vx0").is_none()),
        "vx0 still filtered after tunnels = false: {}",
        status(&loader)
    );
    std::fs::write(&config, "[attach]\ntunnels = true\n").unwrap();
    let st = wait_attached(&mut loader, "vx0", Duration::from_secs(10));
    assert_eq!(role(&st, "vx0"), "tunnel", "{st}");
    assert_eq!(vx0_programs(), 1);
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}
