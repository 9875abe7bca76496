//! Smoke tests of the namespace harness itself, without any eBPF: the
//! Docker-like topology carries traffic, and everything disappears again.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use egress_tests::topology::Topology;
use egress_tests::traffic::{self, http_get, ping, tcp_connect, tcp_server};
use egress_tests::{BpffsMount, addrs, netns_names, require_privileges, root_interface_names};

const T: Duration = Duration::from_secs(3);

fn assert_gone(names: &[String]) {
    let listed = netns_names().expect("ip netns list");
    for n in names {
        assert!(
            !listed.contains(n),
            "namespace {n} still exists after drop: {listed:?}"
        );
        assert!(
            !std::path::Path::new("/var/run/netns").join(n).exists(),
            "/var/run/netns/{n} still exists"
        );
    }
}

fn assert_no_new_root_links(before: &[String]) {
    let after = root_interface_names().expect("ip -o link");
    let new: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(
        new.is_empty(),
        "new interfaces in the root namespace: {new:?}"
    );
}

#[test]
fn docker_like_topology_carries_traffic_and_cleans_up() {
    require_privileges!();
    let links_before = root_interface_names().expect("ip -o link");

    let topo = Topology::docker_like("smoke").expect("build topology");
    let names = topo.namespace_names();
    assert_eq!(names.len(), 4, "host, cloud, 2 containers: {names:?}");
    let listed = netns_names().unwrap();
    for n in &names {
        assert!(listed.contains(n), "{n} not in `ip netns list`");
    }
    assert_eq!(topo.bridge_name(), "docker0");
    let (c0, c1) = (topo.container(0), topo.container(1));
    assert_eq!(c0.ipv4(), addrs::container_v4(0));
    assert_eq!(c1.ipv4().to_string(), "172.17.0.3");
    assert_eq!(c0.ipv6().to_string(), "fd00:dead::2");
    assert_eq!(c1.bridge(), "docker0");
    let diag = || topo.diagnostics();

    // Container -> cloud over HTTP: an "allowed" address and the metadata one.
    let web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let body = http_get(c0.ns(), addrs::SMTP_V4, 8080, "/", T)
        .unwrap_or_else(|e| panic!("GET 198.51.100.25:8080: {e:#}\n{}", diag()));
    assert!(body.starts_with("ok 198.51.100.25:8080"), "{body:?}");
    let body = http_get(c1.ns(), addrs::IMDS_V4, 80, "/latest/meta-data/", T)
        .unwrap_or_else(|e| panic!("GET 169.254.169.254: {e:#}\n{}", diag()));
    assert!(body.starts_with("ok"), "{body:?}");
    assert_eq!(web.accepted(), 1);
    assert!(web.wait_accepted(1, T));
    assert!(egress_tests::wait_until(T, || web.requests() == 1));
    // Routed, not NATed: the cloud sees the container's own address.
    assert_eq!(web.peers()[0].ip(), IpAddr::V4(c0.ipv4()));
    assert_eq!(imds.peers()[0].ip(), IpAddr::V4(c1.ipv4()));

    // IPv6 HTTP to the IMDS v6 address.
    let imds6 = tcp_server(topo.cloud(), addrs::IMDS_V6, 80).unwrap();
    http_get(c0.ns(), addrs::IMDS_V6, 80, "/", T)
        .unwrap_or_else(|e| panic!("GET [fd00:ec2::254]:80: {e:#}\n{}", diag()));
    assert_eq!(imds6.peers()[0].ip(), IpAddr::V6(c0.ipv6()));

    // Every cloud address answers ping, v4 and v6.
    for a in addrs::CLOUD_V4 {
        ping(c0.ns(), a, T).unwrap_or_else(|e| panic!("{e:#}\n{}", diag()));
    }
    for a in addrs::CLOUD_V6 {
        ping(c1.ns(), a, T).unwrap_or_else(|e| panic!("{e:#}\n{}", diag()));
    }

    // Nothing listens on this port: refused (RST), not a timeout.
    let err = tcp_connect(c0.ns(), SocketAddr::new(addrs::SMTP_V4.into(), 9), T).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // Container -> container on the same bridge, v4 and v6.
    let peer = tcp_server(c1.ns(), c1.ipv4(), 9000).unwrap();
    tcp_connect(c0.ns(), SocketAddr::new(c1.ipv4().into(), 9000), T)
        .unwrap_or_else(|e| panic!("c0 -> c1 tcp: {e}\n{}", diag()));
    assert!(peer.wait_accepted(1, T));
    let peer6 = tcp_server(c1.ns(), c1.ipv6(), 9000).unwrap();
    tcp_connect(c0.ns(), SocketAddr::new(c1.ipv6().into(), 9000), T)
        .unwrap_or_else(|e| panic!("c0 -> c1 tcp6: {e}\n{}", diag()));
    assert!(peer6.wait_accepted(1, T));

    // UDP to the cloud.
    let sink = traffic::udp_sink(topo.cloud(), addrs::SMTP_V4, 5353).unwrap();
    let dest = sink.addr();
    assert_eq!(traffic::udp_send(c0.ns(), dest, b"hello", 10).unwrap(), 10);
    assert!(sink.wait_for(10, T), "udp: got {}", sink.count());
    assert_eq!(sink.bytes(), 50);

    // The container namespace is not the host: the bridge is not there.
    assert!(!c0.ns().links().unwrap().contains(&"docker0".to_owned()));
    assert!(topo.host().links().unwrap().contains(&"docker0".to_owned()));

    drop((web, imds, imds6, peer, peer6, sink));
    drop(topo);
    assert_gone(&names);
    assert_no_new_root_links(&links_before);
}

#[test]
fn user_defined_bridge_gets_its_own_subnet() {
    require_privileges!();
    let mut topo = Topology::docker_like_with("brtest", 1).expect("build topology");
    let c = topo
        .add_bridge("br-test1", "172.18.0.0/16")
        .expect("add_bridge");
    assert_eq!(c.ipv4().to_string(), "172.18.0.2");
    assert_eq!(c.ipv6().to_string(), "fd00:dead:1::2");
    assert_eq!(c.bridge(), "br-test1");
    let br = topo.bridge("br-test1").unwrap();
    assert_eq!(br.ipv4.to_string(), "172.18.0.1");
    assert_eq!(br.ipv4_cidr(), "172.18.0.0/16");
    assert_eq!(topo.containers().len(), 2);

    let (c0, c1) = (topo.container(0), topo.container(1));
    let web = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    tcp_connect(c1.ns(), SocketAddr::new(addrs::SMTP_V4.into(), 25), T)
        .unwrap_or_else(|e| panic!("br-test1 container -> cloud: {e}\n{}", topo.diagnostics()));
    assert!(web.wait_accepted(1, T));
    assert_eq!(web.peers()[0].ip(), IpAddr::V4(c1.ipv4()));
    ping(c1.ns(), addrs::SMTP_V6, T).unwrap();
    // docker0 container -> br-test1 container, routed through the host ns.
    ping(c0.ns(), c1.ipv4(), T).unwrap();
    ping(c0.ns(), c1.ipv6(), T).unwrap();

    // A further address in the cloud, routed from the host.
    let extra: IpAddr = "203.0.113.7".parse().unwrap();
    topo.add_cloud_address(extra).unwrap();
    ping(topo.container(0).ns(), extra, T).unwrap();

    assert!(topo.add_bridge("br-test1", "172.19.0.0/16").is_err());
    assert!(
        topo.add_bridge("br-waytoolongname", "172.19.0.0/16")
            .is_err()
    );
    let names = topo.namespace_names();
    drop(web);
    drop(topo);
    assert_gone(&names);
}

#[test]
fn teardown_runs_after_a_panic() {
    require_privileges!();
    let links_before = root_interface_names().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let res = std::thread::spawn(move || {
        let topo = Topology::docker_like_with("panic", 1).unwrap();
        let _srv = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
        let bpffs = BpffsMount::new();
        tx.send((topo.namespace_names(), bpffs.path().to_owned()))
            .unwrap();
        panic!("deliberate panic inside a test");
    })
    .join();
    assert!(res.is_err());
    let (names, bpffs_dir) = rx.recv().unwrap();
    assert_gone(&names);
    assert!(!bpffs_dir.exists(), "{} left behind", bpffs_dir.display());
    assert_no_new_root_links(&links_before);
}

#[test]
fn netns_guards_and_bpffs() {
    require_privileges!();
    let ns = egress_tests::NetNs::new("guard").unwrap();
    let name = ns.name().to_owned();
    // exec runs inside the namespace: only lo exists there.
    assert_eq!(ns.links().unwrap(), vec!["lo".to_owned()]);
    assert!(ns.exec(&["false"]).is_err());
    // run_in: a socket bound to an address that exists only in the namespace.
    ns.ip(&["addr", "add", "192.0.2.77/32", "dev", "lo"])
        .unwrap();
    let bound = ns
        .run_in(|| std::net::TcpListener::bind("192.0.2.77:0").map(|_| ()))
        .unwrap();
    assert!(bound.is_ok(), "{bound:?}");
    // Background process, killed on drop.
    let mut child = ns.spawn(&["sleep", "60"]).unwrap();
    assert!(child.is_running());
    let pid = child.pid();
    drop(child);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .map(|c| !c.starts_with("sleep"))
                .unwrap_or(true)
    );

    // bpffs: a real bpf filesystem, gone after drop.
    let fs = BpffsMount::new();
    let dir = fs.path().to_owned();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == dir.to_str() && l.contains(" bpf ")),
        "{} not a bpf mount",
        dir.display()
    );
    let sub = fs.subdir("egress").unwrap();
    assert!(sub.is_dir());
    // (The kernel may preload maps.debug/progs.debug into every bpffs.)
    assert!(
        fs.list()
            .unwrap()
            .contains(&std::path::PathBuf::from("egress"))
    );
    drop(fs);
    assert!(!dir.exists());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(dir.to_str().unwrap()));

    drop(ns);
    assert_gone(&[name]);
}

/// A shell stand-in for egress-loader, to exercise `LoaderProcess` without
/// eBPF: `run` becomes ready after a moment and exits 0 on SIGTERM;
/// `status --json` fails until then and prints the netns inode it ran in.
const FAKE_LOADER: &str = r#"#!/bin/sh
cmd=$1; shift
pin=
while [ $# -gt 0 ]; do
  case "$1" in --pin-dir) pin=$2; shift 2;; *) shift;; esac
done
case "$cmd" in
  run)
    echo "fake loader: run pin=$pin"
    trap 'echo "fake loader: SIGTERM"; exit 0' TERM
    sleep 0.3; touch "$pin/ready"
    while :; do sleep 0.05; done;;
  status)
    [ -e "$pin/ready" ] || { echo "not ready" >&2; exit 1; }
    printf '{"netns": %s}\n' "$(stat -L -c %i /proc/self/ns/net)";;
  *) echo "unknown $cmd" >&2; exit 2;;
esac
"#;

#[test]
fn loader_process_with_a_stand_in_binary() {
    use std::os::unix::fs::PermissionsExt;
    require_privileges!();
    let dir = std::env::temp_dir().join(format!("egress-fake-{}", egress_tests::unique_suffix()));
    std::fs::create_dir(&dir).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let bin = dir.join("fake-loader");
    std::fs::write(&bin, FAKE_LOADER).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pin = dir.join("pin");
    std::fs::create_dir(&pin).unwrap();

    let ns = egress_tests::NetNs::new("fake").unwrap();
    // /var/run/netns/NAME is a bind mount of the namespace's nsfs inode.
    let ns_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(ns.path()).unwrap());
    let mut lp =
        egress_tests::LoaderProcess::run_bin_in_ns(&bin, &ns, &pin, &["--iface", "docker0"])
            .unwrap();
    assert!(lp.is_running());
    let status = lp.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(
        status["netns"],
        serde_json::json!(ns_inode),
        "status ran in the test netns"
    );
    let v = lp.cli_json("status", &[]).unwrap();
    assert_eq!(v, status);
    assert!(!lp.cli("bogus", &[] as &[&str]).unwrap().status.success());
    let st = lp.terminate(Duration::from_secs(5)).unwrap();
    assert!(st.success(), "{st}");
    let log = lp.log();
    assert!(log.contains("fake loader: run pin="), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");

    // A loader that never becomes ready: wait_ready times out, kill works.
    std::fs::remove_file(pin.join("ready")).unwrap();
    let mut lp2 =
        egress_tests::LoaderProcess::run_bin_in_ns(&bin, &ns, &dir.join("missing"), &[] as &[&str])
            .unwrap();
    let err = lp2.wait_ready(Duration::from_millis(500)).unwrap_err();
    assert!(format!("{err:#}").contains("not ready"), "{err:#}");
    let st = lp2.kill().unwrap();
    assert!(!st.success());
    assert!(!lp2.is_running());
}
