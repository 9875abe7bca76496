//! Coverage: every container on the host filtered, whatever its network,
//! from its first packet (issue 10).
//!
//! - routed veths (Calico's `cali*`: a /32, proxy ARP, no bridge; the same
//!   shape named as Cilium names its veths, `lxc*`), with the DaemonSet's
//!   ConfigMap;
//! - Kubernetes' pod cgroups, shaped as the kubelet's systemd and cgroupfs
//!   drivers make them, in trees the test creates; a loader in its own
//!   cgroup namespace with the node's tree mounted as the DaemonSet does;
//! - the cgroup hooks on cgroups the test creates: every socket operation of
//!   a process in the cgroup and the host's namespace judged (TCP, UDP
//!   sendto and connect, IPv6 and v4-mapped, raw ICMP), SMTP charged once
//!   per connect(), a sibling cgroup (a host service) untouched, a process in
//!   the cgroup but in a container's own namespace left to the bridge;
//!   systemd-driver scopes attached as they appear;
//! - a cgroup v1-only host (the cgroup2 mount hidden in a mount namespace):
//!   the bridge filter runs and says host-network containers are not covered;
//! - with a real Docker engine (its own namespace, its own cgroup parent):
//!   custom-named bridge networks attached within a second of `docker
//!   network create`, host-network containers refused at once with EPERM,
//!   counted, named in events, the same SMTP bucket as bridged ones, a
//!   macvlan network reported everywhere, and `status` listing every
//!   container with its hook.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use egress_tests::cgroups::TestCgroup;
use egress_tests::docker::start_docker;
use egress_tests::traffic::{tcp_server, udp_sink};
use egress_tests::{BpffsMount, LoaderProcess, addrs, require_privileges, wait_until};
use serde_json::Value;

pub(crate) fn cgroup(tag: &str) -> TestCgroup {
    TestCgroup::new(tag).unwrap_or_else(|e| panic!("a test cgroup: {e:#}"))
}

/// `counters --json`'s `hooks[]` entry of `hook`, packets of `verdict`.
pub(crate) fn hook_packets(counters: &Value, hook: &str, verdict: &str) -> u64 {
    counters["hooks"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["hook"] == hook))
        .and_then(|h| h["counters"].as_array())
        .and_then(|c| c.iter().find(|c| c["name"] == verdict))
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no {hook}/{verdict} in {counters}"))
}

/// Every cgroup hook's counters together.
fn all_hook_packets(counters: &Value) -> u64 {
    counters["hooks"]
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|h| h["counters"].as_array().cloned().unwrap_or_default())
                .filter_map(|c| c["packets"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// `status --json`'s `coverage.cgroups[]` entry of `cgroup` (with its `/`).
fn cgroup_status<'a>(status: &'a Value, cgroup: &str) -> Option<&'a Value> {
    status["coverage"]["cgroups"]
        .as_array()?
        .iter()
        .find(|c| format!("/{}", c["cgroup"].as_str().unwrap_or_default()) == cgroup)
}

pub(crate) fn cgroup_attached(status: &Value, cgroup: &str) -> bool {
    cgroup_status(status, cgroup).is_some_and(|c| {
        c["live"]
            .as_array()
            .is_some_and(|l| l.len() == egress_ebpf_common::maps::CGROUP_PROGRAMS.len())
            && c["stale"].as_array().is_some_and(Vec::is_empty)
    })
}

fn refused(v: &Value) -> bool {
    v["ok"] == false && v["errno"] == libc::EPERM
}

/// The `config.toml` of deploy/kubernetes/configmap.yaml, as a file: the
/// DaemonSet's defaults, not a copy of them.
fn daemonset_config(dir: &std::path::Path) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let yaml = std::fs::read_to_string(root.join("deploy/kubernetes/configmap.yaml")).unwrap();
    let body: String = yaml
        .lines()
        .skip_while(|l| l.trim() != "config.toml: |")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(body.contains("[attach]"), "no config.toml in the ConfigMap");
    let file = dir.join("config.toml");
    std::fs::write(&file, body).unwrap();
    file
}

/// Routed veths, no bridge: a Calico pod (`cali*`, a /32, `default via
/// 169.254.1.1`, proxy ARP on the host end) and one named as Cilium names
/// its host-side veths (`lxc*`; the same wiring here: Cilium's own BPF,
/// which answers ARP on `lxc*` in a real cluster, is not part of the test).
/// The loader runs with the DaemonSet's ConfigMap, so its default patterns
/// are what is tested.
#[test]
fn routed_veths_like_calico_and_cilium_are_filtered() {
    require_privileges!();
    let veths = ["cali1a2b3c4d5e", "lxc1a2b3c4d5e6f"];
    let mut topo = topology_with("cali", 0);
    topo.add_routed_pod(veths[0], Ipv4Addr::new(10, 244, 0, 5))
        .unwrap_or_else(|e| panic!("{e:#}"));
    topo.add_routed_pod(veths[1], Ipv4Addr::new(10, 244, 0, 6))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    // Before the filter: the pods reach the metadata service (the wiring works).
    for pod in topo.containers() {
        assert_http_ok(pod.ns(), addrs::IMDS_V4, 80);
    }
    let dir = TempDir::new("cni");
    let config = daemonset_config(&dir);
    let bpffs = BpffsMount::new();
    // The ConfigMap's `kubepods` needs a node: no cgroup hooks here.
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--config",
            config.to_str().unwrap(),
            "--cgroup",
            "none",
            "--no-docker",
        ],
    );
    wait_attached(&mut loader, veths[0], READY_TIMEOUT);
    wait_attached(&mut loader, veths[1], READY_TIMEOUT);
    for pod in topo.containers() {
        assert_http_refused(pod.ns(), addrs::IMDS_V4, 80);
        assert_http_ok(pod.ns(), addrs::SMTP_V4, 8080);
    }
    let c = counters(&loader);
    assert!(packets(&c, "metadata_blocked") >= 2, "{c}");
    // Counted on each pod's own veth: the veth is the pod's identity.
    for veth in veths {
        let iface = c["interfaces"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["interface"] == veth))
            .unwrap_or_else(|| panic!("{veth} not counted: {c}"));
        let blocked = iface["counters"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == "metadata_blocked"))
            .and_then(|x| x["packets"].as_u64())
            .unwrap_or(0);
        assert!(blocked >= 1, "{veth}: {iface}");
    }
}

/// A pod's cgroup as the kubelet makes it, below `kubepods`: the systemd
/// driver's slices and scope, or cgroupfs' directories.
const POD_UID: &str = "6f1c2e3a-8b4d-4e5f-9a0b-1c2d3e4f5a6b";

fn systemd_pod() -> String {
    let uid = POD_UID.replace('-', "_");
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{}.scope",
        "ab".repeat(32)
    )
}

fn cgroupfs_pod() -> String {
    format!("kubepods/besteffort/pod{POD_UID}/{}", "cd".repeat(32))
}

/// hostNetwork pods on a node of either cgroup driver, in cgroup trees the
/// test makes (`node-systemd/`, `node-cgroupfs/` stand for the node's
/// root): the hooks on `kubepods.slice` / `kubepods` judge a container in
/// the deepest leaf, created after the attach, from its first connect();
/// SMTP from both shares the bucket with a bridged pod; the kubelet beside
/// them keeps the metadata service.
#[test]
fn kubepods_shaped_cgroups_judge_host_network_pods() {
    require_privileges!();
    let topo = topology_with("kube", 1);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _smtp = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let cg = cgroup("kube");
    cg.mkdir("node-systemd/kubepods.slice").unwrap();
    cg.mkdir("node-systemd/system.slice/kubelet.service")
        .unwrap();
    cg.mkdir("node-cgroupfs/kubepods").unwrap();
    let systemd = cg.arg("node-systemd/kubepods.slice");
    let cgroupfs = cg.arg("node-cgroupfs/kubepods");
    let bpffs = BpffsMount::new();
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--no-docker",
            "--cgroup",
            &systemd,
            "--cgroup",
            &cgroupfs,
            "--smtp-rate",
            "1/hour",
            "--smtp-burst",
            "3",
        ],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    for target in [&systemd, &cgroupfs] {
        assert!(
            wait_until(READY_TIMEOUT, || cgroup_attached(&status(&loader), target)),
            "the cgroup hooks are not attached to {target}: {}",
            status(&loader)
        );
    }
    // The pods start after the attach, as they do on a node.
    let pods = [
        format!("node-systemd/{}", systemd_pod()),
        format!("node-cgroupfs/{}", cgroupfs_pod()),
    ];
    for p in &pods {
        cg.mkdir(p).unwrap();
    }
    let imds = addrs::IMDS_V4.to_string();
    let smtp = addrs::SMTP_V4.to_string();
    let host = topo.host();
    let mut blocked = 0;
    for p in &pods {
        let v = cg.probe(host, p, &["tcp", &imds, "80"]).unwrap();
        eprintln!("{p}: {v}");
        assert!(refused(&v), "{p}: {v}");
        assert!(v["ms"].as_f64().unwrap() < 100.0, "not at once: {v}");
        blocked += 1;
        let c = counters(&loader);
        assert_eq!(
            hook_packets(&c, "cgroup/connect4", "metadata_blocked"),
            blocked,
            "{p}: {c}"
        );
    }
    // One bucket: burst 3 is one attempt from each pod shape and one from a
    // bridged pod; the next, from either shape, is over the rate.
    for p in &pods {
        let v = cg.probe(host, p, &["tcp", &smtp, "25"]).unwrap();
        assert_eq!(v["ok"], true, "{p}: within the burst: {v}");
    }
    egress_tests::traffic::tcp_connect(
        topo.container(0).ns(),
        std::net::SocketAddr::new(IpAddr::V4(addrs::SMTP_V4), 25),
        Duration::from_secs(2),
    )
    .unwrap_or_else(|e| panic!("the bridged pod's attempt, within the burst: {e:#}"));
    for p in &pods {
        let v = cg.probe(host, p, &["tcp", &smtp, "25"]).unwrap();
        assert!(refused(&v), "{p}: over the shared bucket: {v}");
    }
    let c = counters(&loader);
    assert_eq!(packets(&c, "smtp_allowed"), 3, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 2, "{c}");
    // The kubelet (a host service of the same node and netns) keeps it.
    let before = all_hook_packets(&counters(&loader));
    let v = cg
        .probe(
            host,
            "node-systemd/system.slice/kubelet.service",
            &["tcp", &imds, "80"],
        )
        .unwrap();
    assert_eq!(v["ok"], true, "the kubelet lost the metadata service: {v}");
    assert_eq!(all_hook_packets(&counters(&loader)), before);
    assert!(loader.is_running(), "{}", loader.log());
}

/// A loader in a pod: a cgroup of its own and its own cgroup namespace
/// (`unshare --cgroup`, as containerd gives a pod on cgroup v2), the node's
/// tree mounted where the DaemonSet's hostPath volume puts it (here: the
/// host's mount, which reads `/../..` in mountinfo from inside). It finds
/// the tree and judges a hostNetwork pod from its first connect(). With only
/// the namespace's own cgroup2 mount (no hostPath), `run --cgroup kubepods`
/// refuses to start and says why.
#[test]
fn a_loader_in_its_own_cgroup_namespace_uses_the_nodes_tree() {
    require_privileges!();
    let topo = topology_with("kns", 0);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let cg = cgroup("kns");
    cg.mkdir("kubepods.slice").unwrap();
    let loader_pod = cg.mkdir("kubepods.slice/egress-filter-pod").unwrap();
    let target = cg.arg("kubepods.slice");
    let mount = cg.fs().mount().to_owned();
    let bpffs = BpffsMount::new();
    let pins = pin_dir(&bpffs);
    let bin = egress_tests::loader_bin().unwrap();
    // sh joins the pod's cgroup, unshare gives it a cgroup and a mount
    // namespace, the inner script (own: the node's tree unmounted, the
    // namespace's own cgroup2 mounted in its place, as a pod without the
    // hostPath has it) enters the topology's host network namespace.
    let inner = format!(
        "mode=$1; shift; \
         if [ \"$mode\" = own ]; then umount -l {mount} && mount -t cgroup2 cgroup2 {mount}; fi; \
         grep cgroup2 /proc/self/mountinfo >&2; \
         exec nsenter --net={net} -- {bin} \"$@\"",
        mount = mount.display(),
        net = topo.host().path().display(),
        bin = bin.display()
    );
    let in_pod = |mode: &str, args: &[&str]| {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec unshare --cgroup --mount \
                 --propagation private sh -c '{inner}' sh \"$@\"",
                loader_pod.display()
            ),
            "sh",
            mode,
        ])
        .args(args);
        cmd
    };
    let pins_arg = pins.to_str().unwrap();
    // Without the node's tree: a clear refusal, before anything is loaded
    // (`timeout` bounds the run, should it start after all).
    let own = in_pod(
        "own",
        &[
            "run",
            "--pin-dir",
            pins_arg,
            "--no-docker",
            "--cgroup",
            "kubepods",
        ],
    );
    let out = Command::new("timeout")
        .args(["--signal=KILL", "30"])
        .arg(own.get_program())
        .args(own.get_args())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"kubepods\"") && err.contains("is not the host's tree"),
        "{err}"
    );
    // With it (the hostPath), attached; the pod that starts later is judged.
    let dir = TempDir::new("kns");
    let log = dir.join("loader.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = in_pod(
        "hostpath",
        &[
            "run",
            "--pin-dir",
            pins_arg,
            "--no-docker",
            "--rescan",
            RESCAN,
            "--cgroup",
            &target,
        ],
    );
    cmd.stdout(log_file.try_clone().unwrap()).stderr(log_file);
    let _loader = egress_tests::ChildGuard::spawn(cmd, "egress-loader run (in a pod)").unwrap();
    let status = || -> Value {
        let out = Command::new(&bin)
            .args(["status", "--json", "--no-docker", "--pin-dir", pins_arg])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    assert!(
        wait_until(READY_TIMEOUT, || cgroup_attached(&status(), &target)),
        "{target} not attached: {}\n{}",
        status(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let pod = systemd_pod();
    cg.mkdir(&pod).unwrap();
    let v = cg
        .probe(
            topo.host(),
            &pod,
            &["tcp", &addrs::IMDS_V4.to_string(), "80"],
        )
        .unwrap();
    assert!(refused(&v), "{v}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("not covered"), "{logged}");
}

/// The socket hooks, cgroup_skb and the netns check, on cgroups this test
/// made: `app` stands for the engine's cgroup parent, `ssh.service` beside
/// it for a host service.
#[test]
fn cgroup_hooks_judge_host_network_processes_once() {
    require_privileges!();
    let topo = topology_with("cgh", 1);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _imds6 = tcp_server(topo.cloud(), addrs::IMDS_V6, 80).unwrap();
    let _smtp = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let _web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    // A UDP peer that reads what it gets (no port unreachable comes back
    // to fail a connected socket's next call).
    let udp_peer = udp_sink(topo.cloud(), addrs::SMTP_V4, 8125).unwrap();
    let cg = cgroup("hooks");
    cg.mkdir("app").unwrap();
    cg.mkdir("ssh.service").unwrap();
    let bpffs = BpffsMount::new();
    let target = cg.arg("app");
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--no-docker",
            "--cgroup",
            &target,
            "--smtp-rate",
            "1/hour",
            "--smtp-burst",
            "3",
        ],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert!(
        wait_until(READY_TIMEOUT, || cgroup_attached(&status(&loader), &target)),
        "the cgroup hooks are not attached to {target}: {}",
        status(&loader)
    );
    // A container's first cgroup: created after the attach, inherited.
    cg.mkdir("app/c1").unwrap();
    let host = topo.host();
    let imds = addrs::IMDS_V4.to_string();
    let probe = |below: &str, args: &[&str]| -> Value {
        let v = cg
            .probe(host, below, args)
            .unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("{below}: {args:?} -> {v}");
        v
    };

    // TCP connect: EPERM at once (no SYN), counted on cgroup/connect4.
    let v = probe("app/c1", &["tcp", &imds, "80"]);
    assert!(refused(&v), "{v}");
    assert!(v["ms"].as_f64().unwrap() < 100.0, "not at once: {v}");
    let c = counters(&loader);
    assert_eq!(
        hook_packets(&c, "cgroup/connect4", "metadata_blocked"),
        1,
        "{c}"
    );
    // IPv6, and IPv4 through an IPv6 socket (v4-mapped): connect6.
    let v6 = addrs::IMDS_V6.to_string();
    assert!(refused(&probe("app/c1", &["tcp", &v6, "80"])));
    let mapped = format!("::ffff:{imds}");
    assert!(refused(&probe("app/c1", &["tcp", &mapped, "80"])));
    assert_eq!(
        hook_packets(&counters(&loader), "cgroup/connect6", "metadata_blocked"),
        2
    );
    // UDP: an unconnected sendto() is judged by cgroup_skb, whose drop the
    // kernel returns as EPERM from the call, at once; a connected socket
    // at its connect4. Not port 53: the built-in rule leaves DNS open there
    // (GCP's resolver).
    let v = probe("app/c1", &["udp-sendto", &imds, "8125"]);
    assert!(refused(&v), "{v}");
    assert!(v["ms"].as_f64().unwrap() < 100.0, "not at once: {v}");
    assert!(refused(&probe("app/c1", &["udp-connect", &imds, "8125"])));
    // A socket connected to an open peer: its datagrams to the peer were
    // judged at connect() and pass uncounted; a sendto() naming the
    // metadata address on that socket was not, and is refused.
    let peer = addrs::SMTP_V4.to_string();
    let before = counters(&loader);
    let ok = probe("app/c1", &["udp-connect", &peer, "8125"]);
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(
        udp_peer.wait_for(1, Duration::from_secs(2)),
        "the datagram did not arrive"
    );
    let after = counters(&loader);
    assert_eq!(
        hook_packets(&after, "cgroup_skb/egress", "passed"),
        hook_packets(&before, "cgroup_skb/egress", "passed"),
        "a connected socket's datagram to its peer was judged again: {after}"
    );
    assert_eq!(
        hook_packets(&after, "cgroup/connect4", "passed"),
        hook_packets(&before, "cgroup/connect4", "passed") + 1,
        "{after}"
    );
    let v = probe(
        "app/c1",
        &["udp-connected-sendto", &peer, "8125", &imds, "8125"],
    );
    assert!(refused(&v), "a connected socket's sendto() elsewhere: {v}");
    // An unconnected sendto() to an open destination is judged and passes.
    let ok = probe("app/c1", &["udp-sendto", &peer, "8125"]);
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(
        hook_packets(&counters(&loader), "cgroup_skb/egress", "passed"),
        hook_packets(&after, "cgroup_skb/egress", "passed") + 1,
        "the open sendto() alone (the connected socket's datagram to its peer was judged at connect)"
    );
    // A raw ICMP socket: no socket hook sees it; cgroup_skb drops the packet.
    let p = probe("app/c1", &["ping", &imds]);
    assert!(refused(&p), "{p}");
    let c = counters(&loader);
    assert_eq!(
        hook_packets(&c, "cgroup/connect4", "metadata_blocked"),
        2,
        "{c}"
    );
    assert_eq!(
        hook_packets(&c, "cgroup_skb/egress", "metadata_blocked"),
        3,
        "{c}"
    );
    // Other destinations pass.
    let ok = probe("app/c1", &["tcp", &addrs::SMTP_V4.to_string(), "8080"]);
    assert_eq!(ok["ok"], true, "{ok}");

    // SMTP: each connect() is one attempt. Burst 3 admits three, and the
    // SYNs that follow (seen by cgroup_skb) are not charged again.
    let smtp = addrs::SMTP_V4.to_string();
    for i in 0..3 {
        let v = probe("app/c1", &["tcp", &smtp, "25"]);
        assert_eq!(v["ok"], true, "attempt {i} within the burst: {v}");
    }
    let c = counters(&loader);
    assert_eq!(
        hook_packets(&c, "cgroup/connect4", "smtp_allowed"),
        3,
        "{c}"
    );
    // The bucket is the bridge's too: a container on docker0 is over the rate.
    let r = egress_tests::traffic::tcp_connect(
        topo.container(0).ns(),
        std::net::SocketAddr::new(IpAddr::V4(addrs::SMTP_V4), 25),
        DROPPED,
    );
    assert!(r.is_err(), "a bridged container's 4th attempt got through");
    let v = probe("app/c1", &["tcp", &smtp, "25"]);
    assert!(refused(&v), "the 5th attempt, from the cgroup: {v}");
    let c = counters(&loader);
    assert_eq!(packets(&c, "smtp_allowed"), 3, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 2, "{c}");

    // A host service beside the engine's cgroup keeps its access.
    let before = all_hook_packets(&counters(&loader));
    let v = probe("ssh.service", &["tcp", &imds, "80"]);
    assert_eq!(
        v["ok"], true,
        "a host service lost the metadata service: {v}"
    );
    assert_eq!(v["detail"], "HTTP/1.0 200 OK", "{v}");
    assert_eq!(all_hook_packets(&counters(&loader)), before);
    // A process in the cgroup but in a container's own network namespace
    // (a bridged container): the bridge judges it, the hooks do not count it.
    let c = counters(&loader);
    let bridge_blocked = packets(&c, "metadata_blocked");
    let v = cg
        .probe(topo.container(0).ns(), "app/c1", &["tcp-nb", &imds, "80"])
        .unwrap();
    assert_eq!(v["ok"], true, "refused in a container's namespace: {v}");
    assert!(
        wait_until(Duration::from_secs(2), || packets(
            &counters(&loader),
            "metadata_blocked"
        ) > bridge_blocked),
        "the bridge did not judge it"
    );
    assert_eq!(all_hook_packets(&counters(&loader)), before);
    assert!(loader.is_running(), "{}", loader.log());
}

/// What a kernel before Linux 6.15 does: its verifier refuses
/// `cgroup_skb/egress` (no `bpf_get_netns_cookie` there). This machine's
/// loads it, so the test names it in the loader's refuse list: the sendmsg
/// hooks are then attached to judge UDP in its place, and TCP is judged at
/// connect() as everywhere.
#[test]
fn where_cgroup_skb_cannot_load_the_sendmsg_hooks_judge_udp() {
    require_privileges!();
    let topo = topology_with("cgf", 0);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let cg = cgroup("fallback");
    cg.mkdir("app").unwrap();
    let bpffs = BpffsMount::new();
    let target = cg.arg("app");
    let mut loader = LoaderProcess::run_in_ns_with_env(
        topo.host(),
        &pin_dir(&bpffs),
        &["--rescan", RESCAN, "--no-docker", "--cgroup", &target],
        &[(
            egress_loader::kernel::cgroup::REFUSE_ENV,
            "egress_cgroup_skb",
        )],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let live = |st: &Value| -> Vec<String> {
        cgroup_status(st, &target)
            .and_then(|c| c["live"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        wait_until(READY_TIMEOUT, || live(&status(&loader)).len() == 4),
        "{}",
        status(&loader)
    );
    let mut hooks = live(&status(&loader));
    hooks.sort();
    assert_eq!(
        hooks,
        [
            "cgroup/connect4",
            "cgroup/connect6",
            "cgroup/sendmsg4",
            "cgroup/sendmsg6"
        ],
        "{}",
        loader.log()
    );
    assert!(
        loader
            .log()
            .contains("cgroup_skb/egress: the kernel refused it"),
        "{}",
        loader.log()
    );
    cg.mkdir("app/c1").unwrap();
    let imds = addrs::IMDS_V4.to_string();
    let probe = |args: &[&str]| -> Value {
        let v = cg
            .probe(topo.host(), "app/c1", args)
            .unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("{args:?} -> {v}");
        v
    };
    let v = probe(&["udp-sendto", &imds, "8125"]);
    assert!(refused(&v), "{v}");
    assert!(refused(&probe(&["tcp", &imds, "80"])));
    let c = counters(&loader);
    assert_eq!(
        hook_packets(&c, "cgroup/sendmsg4", "metadata_blocked"),
        1,
        "{c}"
    );
    assert_eq!(
        hook_packets(&c, "cgroup/connect4", "metadata_blocked"),
        1,
        "{c}"
    );
    assert!(loader.is_running(), "{}", loader.log());
}

/// Per-source and per-container scopes through the cgroup hooks: host-network
/// containers share the host's addresses, so each cgroup is its own bucket
/// (the kernel's cgroup id is the key), and one container's attempts do not
/// empty another's.
#[test]
fn each_host_network_cgroup_has_its_own_smtp_bucket() {
    require_privileges!();
    let topo = topology_with("cgb", 0);
    let _smtp = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let cg = cgroup("bucket");
    cg.mkdir("app").unwrap();
    let bpffs = BpffsMount::new();
    let target = cg.arg("app");
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--no-docker",
            "--cgroup",
            &target,
            "--scope",
            "per-source",
            "--smtp-rate",
            "1/hour",
            "--smtp-burst",
            "2",
        ],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert!(
        wait_until(READY_TIMEOUT, || cgroup_attached(&status(&loader), &target)),
        "{}",
        status(&loader)
    );
    cg.mkdir("app/c1").unwrap();
    cg.mkdir("app/c2").unwrap();
    let smtp = addrs::SMTP_V4.to_string();
    let attempt = |below: &str| -> bool {
        let v = cg
            .probe(topo.host(), below, &["tcp", &smtp, "25"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("{below}: {v}");
        assert!(
            v["ok"] == true || refused(&v),
            "neither passed nor refused: {v}"
        );
        v["ok"] == true
    };
    let c1: Vec<bool> = (0..3).map(|_| attempt("app/c1")).collect();
    assert_eq!(c1, [true, true, false], "c1's own burst of 2");
    let c2: Vec<bool> = (0..3).map(|_| attempt("app/c2")).collect();
    assert_eq!(c2, [true, true, false], "c2 was charged for c1's attempts");
    let c = counters(&loader);
    assert_eq!(packets(&c, "smtp_allowed"), 4, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 2, "{c}");
}

/// The systemd driver's layout: container scopes beside host services in
/// one slice. A pattern attaches to each scope as it appears.
#[test]
fn cgroup_patterns_follow_new_scopes() {
    require_privileges!();
    let topo = topology_with("cgs", 0);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let cg = cgroup("slice");
    cg.mkdir("system.slice/ssh.service").unwrap();
    let bpffs = BpffsMount::new();
    let pattern = cg.arg("system.slice/docker-*.scope");
    // A long rescan: only inotify can attach within the bound below.
    let mut loader = LoaderProcess::run_in_ns(
        topo.host(),
        &pin_dir(&bpffs),
        &["--rescan", "30", "--no-docker", "--cgroup", &pattern],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    loader
        .wait_ready_until(READY_TIMEOUT, |_| true)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // In its loop: the first reconcile has set up the watch.
    assert!(
        wait_until(READY_TIMEOUT, || loader.log().contains("drop events")),
        "{}",
        loader.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    let scope = format!("system.slice/docker-{}.scope", "ab".repeat(32));
    let target = cg.arg(&scope);
    // The pins are the loader's last step: all three there means attached.
    let pins = egress_loader::kernel::pins::PinDir::new(pin_dir(&bpffs));
    let pinned = || {
        ["connect4", "connect6", "skb_egress"]
            .iter()
            .all(|h| pins.cgroup_link(&target[1..], h).exists())
    };
    let created = Instant::now();
    cg.mkdir(&scope).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), pinned),
        "{target} not attached: {}\n{}",
        status(&loader),
        loader.log()
    );
    let took = created.elapsed();
    println!(
        "a new scope attached {} ms after its mkdir",
        took.as_millis()
    );
    assert!(
        cgroup_attached(&status(&loader), &target),
        "{}",
        status(&loader)
    );
    // Not race-free (no attach to a scope in a shared slice can be:
    // docs/deployment.md), but a bound on the window.
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let imds = addrs::IMDS_V4.to_string();
    let v = cg
        .probe(topo.host(), &scope, &["tcp", &imds, "80"])
        .unwrap();
    assert!(refused(&v), "{v}");
    let v = cg
        .probe(
            topo.host(),
            "system.slice/ssh.service",
            &["tcp", &imds, "80"],
        )
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        cgroup_status(&status(&loader), &cg.arg("system.slice")).is_none(),
        "the slice itself must not be attached"
    );
    // The scope goes: its links are released.
    std::fs::remove_dir(cg.dir(&scope)).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || cgroup_status(
            &status(&loader),
            &target
        )
        .is_none()),
        "links of the removed scope kept: {}",
        status(&loader)
    );
}

/// A cgroup path that does not exist: created (the engine will put its
/// containers there) and said in the log, never a silent no-op; `none` and a
/// bad path refused.
#[test]
fn a_missing_cgroup_is_created_and_said() {
    require_privileges!();
    let topo = topology_with("cgm", 1);
    let cg = cgroup("missing");
    let target = cg.arg("engine/parent");
    let bpffs = BpffsMount::new();
    let mut loader = start_loader(&topo, &bpffs, &["--no-docker", "--cgroup", &target]);
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert!(
        wait_until(READY_TIMEOUT, || cgroup_attached(&status(&loader), &target)),
        "{}",
        status(&loader)
    );
    assert!(cg.dir("engine/parent").is_dir());
    let log = loader.log();
    assert!(
        log.contains(&format!("cgroup {target} did not exist: created it")),
        "{log}"
    );
    let text = loader.cli("status", &["--no-docker"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&target) && text.contains("attached: cgroup/connect4"),
        "{text}"
    );
    for (bad, why) in [
        ("/", "root cgroup"),
        ("docker", "starts with /"),
        ("/a/../b", "not a cgroup path"),
        ("/*", "every cgroup"),
    ] {
        // Refused while the flags are read: before anything is loaded.
        let out = Command::new(egress_tests::loader_bin().unwrap())
            .args(["run", "--pin-dir", "/nonexistent/egress", "--cgroup", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--cgroup {bad}: {err}");
        assert!(
            err.contains("--cgroup[0]") && err.contains(why),
            "--cgroup {bad}: {err}"
        );
    }
}

/// A host without cgroup2 (here: its mount hidden in a private mount
/// namespace): the bridges are filtered, and the log and `status` say that
/// host-network containers are not.
#[test]
fn without_cgroup2_the_bridge_filter_runs_and_says_so() {
    require_privileges!();
    let Some(fs) = egress_loader::kernel::cgroup::CgroupFs::find() else {
        // Already a v1-only host: the loader's own checks below still apply.
        eprintln!("no cgroup2 here");
        return;
    };
    let topo = topology_with("cgv1", 1);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let bpffs = BpffsMount::new();
    let pins = pin_dir(&bpffs);
    let bin = egress_tests::loader_bin().unwrap();
    // unshare: a mount namespace of its own, where the cgroup2 mount is
    // detached; nsenter: the topology's host network namespace.
    let script = format!(
        "umount -l {mount} && exec nsenter --net={net} -- {bin} \"$@\"",
        mount = fs.mount().display(),
        net = topo.host().path().display(),
        bin = bin.display()
    );
    let v1 = |args: &[&str]| {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(args);
        cmd
    };
    let pins_arg = pins.to_str().unwrap();
    let mut cmd = v1(&[
        "run",
        "--pin-dir",
        pins_arg,
        "--no-docker",
        "--rescan",
        RESCAN,
        "--cgroup",
        "auto",
    ]);
    let log = TempDir::new("cgv1");
    let log_file = std::fs::File::create(log.join("loader.log")).unwrap();
    cmd.stdout(log_file.try_clone().unwrap()).stderr(log_file);
    let _loader = egress_tests::ChildGuard::spawn(cmd, "egress-loader run (no cgroup2)").unwrap();
    let status_text = || {
        let out = v1(&["status", "--pin-dir", pins_arg, "--no-docker"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_until(READY_TIMEOUT, || status_text().contains("docker0")),
        "{}",
        std::fs::read_to_string(log.join("loader.log")).unwrap_or_default()
    );
    assert_http_refused(topo.container(0).ns(), addrs::IMDS_V4, 80);
    let text = status_text();
    assert!(
        text.contains("NOT COVERED: no cgroup2 file system is mounted"),
        "{text}"
    );
    let logged = std::fs::read_to_string(log.join("loader.log")).unwrap();
    assert!(
        logged.contains("host-network containers are not covered"),
        "{logged}"
    );
}

// ---- with a real Docker engine ----

use egress_tests::docker::{DockerHost, Reach, images};
use egress_tests::{EventsSocket, NetNs};

/// Programs on `iface`'s TCX ingress, asked in `ns` (fast enough to time an attach).
fn tcx_ingress(ns: &NetNs, iface: &str) -> usize {
    use aya::programs::{SchedClassifier, TcAttachType};
    let name = iface.to_owned();
    ns.run_in(move || SchedClassifier::query_tcx(&name, TcAttachType::Ingress))
        .ok()
        .and_then(Result::ok)
        .map(|(_, p)| p.len())
        .unwrap_or(0)
}

/// The value of the unlabelled gauge `name` in an OpenMetrics text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// `status --json` with the engine: its `coverage.containers[]` entry `name`.
fn container_coverage(loader: &LoaderProcess, dh: &DockerHost, name: &str) -> Value {
    let st = loader
        .cli_json("status", &["--docker-host", &dh.docker_host()])
        .unwrap_or_else(|e| panic!("{e:#}"));
    st["coverage"]["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or_else(|| panic!("{name} not listed: {st}"))
}

/// `docker run --rm ARGS...`: its output (stdout and stderr), whatever its status.
fn docker_run(dh: &DockerHost, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    let out = dh
        .docker_output(&all, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("docker {all:?}: {e:#}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const METRICS_PORT: u16 = 9184;

/// Bridge networks of any name attached within a second of their creation;
/// a macvlan network reported everywhere; `status` lists every container
/// with its hook.
#[test]
fn engine_networks_are_attached_and_reported() {
    require_privileges!(docker);
    let bpffs = BpffsMount::new();
    let dh = start_docker("cvnet");
    let imds_server = tcp_server(dh.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _web = tcp_server(dh.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let url = dh.docker_host();
    let metrics_addr = format!("127.0.0.1:{METRICS_PORT}");
    // Only docker0 by pattern, and a rescan too slow to attach within the
    // second: the engine's events do it.
    let mut loader = LoaderProcess::run_in_ns(
        dh.host(),
        &pin_dir(&bpffs),
        &[
            "--iface",
            "docker0",
            "--rescan",
            "30",
            "--docker-host",
            &url,
            "--metrics-addr",
            &metrics_addr,
            "--events-socket",
            "none",
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert!(
        wait_until(Duration::from_secs(20), || loader
            .log()
            .contains("following its networks")),
        "{}",
        loader.log()
    );

    // A compose-style network with its own interface name.
    let started = Instant::now();
    dh.docker(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=custom0",
        "--subnet",
        "172.30.0.0/24",
        "custom",
    ])
    .unwrap();
    let created = started.elapsed();
    assert!(
        wait_until(Duration::from_secs(3), || tcx_ingress(dh.host(), "custom0")
            == 1),
        "custom0 not attached: {}",
        loader.log()
    );
    let attached = started.elapsed();
    println!(
        "docker network create: {} ms; custom0 attached {} ms after the command started ({} ms after it returned)",
        created.as_millis(),
        attached.as_millis(),
        attached.saturating_sub(created).as_millis()
    );
    assert!(
        attached.saturating_sub(created) < Duration::from_secs(1),
        "attached {attached:?} after the command started, which took {created:?}"
    );
    // A network without the option: br-<first 12 of its id>.
    let id = dh
        .docker(&["network", "create", "--subnet", "172.31.0.0/24", "plain"])
        .unwrap();
    let plain = format!("br-{}", &id[..12]);
    assert!(
        wait_until(Duration::from_secs(3), || tcx_ingress(dh.host(), &plain)
            == 1),
        "{plain} not attached: {}",
        loader.log()
    );

    // Containers on each, and one on a macvlan network.
    // The macvlan's parent NIC: a veth (this kernel has no dummy driver).
    dh.host()
        .ip(&[
            "link", "add", "mvpar0", "type", "veth", "peer", "name", "mvpar1",
        ])
        .unwrap();
    dh.host().ip(&["link", "set", "mvpar0", "up"]).unwrap();
    dh.docker(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=mvpar0",
        "--subnet",
        "10.99.0.0/24",
        "mvnet",
    ])
    .unwrap();
    for (name, net) in [
        ("onbridge", "bridge"),
        ("oncustom", "custom"),
        ("onplain", "plain"),
        ("onmacvlan", "mvnet"),
    ] {
        dh.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            images::BUSYBOX_IMAGE,
            "sleep",
            "3600",
        ])
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    // Filtered: the metadata service unreachable from the custom network,
    // the web server reachable. (Debian's busybox wget has no -T: `timeout`.)
    let get = |c: &str, port: u16, addr: Ipv4Addr| -> Reach {
        let script = format!("timeout 2 wget -q -O- http://{addr}:{port}/ 2>&1; echo \"exit=$?\"");
        let out = dh
            .docker(&["exec", c, "sh", "-c", &script])
            .unwrap_or_else(|e| panic!("probe from {c}: {e:#}"));
        let (body, exit) = out.rsplit_once("exit=").unwrap_or((&out, "?"));
        Reach::from_busybox(exit.trim().parse().unwrap_or(-1), body)
            .unwrap_or_else(|| panic!("GET {addr}:{port} from {c}: unexpected {out:?}"))
    };
    let accepted = imds_server.accepted();
    assert_eq!(
        get("oncustom", 80, addrs::IMDS_V4),
        Reach::Refused,
        "custom0 does not filter"
    );
    assert_eq!(
        get("oncustom", 8080, addrs::SMTP_V4),
        Reach::Connected,
        "custom0 drops what it must not"
    );
    assert_eq!(
        get("onplain", 80, addrs::IMDS_V4),
        Reach::Refused,
        "{plain} does not filter"
    );
    assert_eq!(
        imds_server.accepted(),
        accepted,
        "the metadata server was reached"
    );

    // Reported: the log, status, /metrics, verify.
    assert!(
        wait_until(Duration::from_secs(15), || {
            let log = loader.log();
            log.contains("UNCOVERED: macvlan network mvnet")
                && log.contains("UNCOVERED container onmacvlan")
        }),
        "{}",
        loader.log()
    );
    // Each bridged container is judged by the program on its own veth
    // (issue 11's endpoints, read from the pins), on whichever bridge.
    for name in ["onbridge", "oncustom", "onplain"] {
        let c = container_coverage(&loader, &dh, name);
        assert_eq!(c["hook"], "veth", "{c}");
        let via = c["via"][0].as_str().unwrap_or_default().to_owned();
        assert!(
            via.starts_with("veth") && pin_dir(&bpffs).join("links").join(&via).exists(),
            "{c}"
        );
    }
    let mv = container_coverage(&loader, &dh, "onmacvlan");
    assert_eq!(mv["hook"], "uncovered", "{mv}");
    // `explain` agrees: no hook judges it, and it says why.
    let x = loader
        .cli_json(
            "explain",
            &[
                "--from",
                "onmacvlan",
                "--docker-host",
                &url,
                "--to",
                "169.254.169.254:80/tcp",
            ],
        )
        .unwrap_or_else(|e| panic!("explain --from onmacvlan: {e:#}"));
    assert_eq!(
        (x["hook_kind"].as_str(), x["verdict"].as_str()),
        (Some("uncovered"), Some("not_judged")),
        "{x}"
    );
    assert!(
        x["hook_reason"]
            .as_str()
            .is_some_and(|r| r.contains("macvlan network mvnet")),
        "{x}"
    );
    // Each bridged container: explain names the veth status names.
    for name in ["onbridge", "oncustom", "onplain"] {
        let c = container_coverage(&loader, &dh, name);
        let x = loader
            .cli_json(
                "explain",
                &[
                    "--from",
                    name,
                    "--docker-host",
                    &url,
                    "--to",
                    "169.254.169.254:80/tcp",
                ],
            )
            .unwrap_or_else(|e| panic!("explain --from {name}: {e:#}"));
        assert_eq!(
            (x["hook_kind"].as_str(), x["via"].as_str()),
            (Some("veth"), c["via"][0].as_str()),
            "{x}"
        );
        assert_eq!(x["verdict"], "metadata_blocked", "{x}");
    }
    assert!(
        mv["reason"]
            .as_str()
            .unwrap()
            .contains("macvlan network mvnet"),
        "{mv}"
    );
    let text = loader.cli("status", &["--docker-host", &url]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    println!("---- status ----\n{text}");
    assert!(text.contains("4 running, 1 UNCOVERED"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("onmacvlan") && l.contains("UNCOVERED: macvlan")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("oncustom") && l.contains("veth (veth")),
        "{text}"
    );
    assert!(
        text.contains("network mvnet (macvlan): NOT COVERED"),
        "{text}"
    );
    assert!(
        wait_until(Duration::from_secs(15), || {
            gauge(
                &metrics_text(dh.host(), METRICS_PORT),
                "egress_uncovered_containers",
            ) == Some(1.0)
        }),
        "{}",
        metrics_text(dh.host(), METRICS_PORT)
    );
    assert_eq!(
        gauge(
            &metrics_text(dh.host(), METRICS_PORT),
            "egress_uncovered_networks"
        ),
        Some(1.0)
    );
    let v = loader.cli("verify", &["--docker-host", &url]).unwrap();
    let vt = String::from_utf8_lossy(&v.stdout).into_owned();
    println!("---- verify ----\n{vt}");
    assert_eq!(v.status.code(), Some(1), "{vt}");
    assert!(vt.contains("FAIL  container onmacvlan"), "{vt}");
    assert!(vt.contains("FAIL  network mvnet (macvlan)"), "{vt}");
    for b in ["docker0", "custom0", plain.as_str()] {
        assert!(vt.contains(&format!("PASS  {b}")), "{b}: {vt}");
    }
    // Without the macvlan network nothing is uncovered: verify passes.
    dh.docker(&["rm", "-f", "onmacvlan"]).unwrap();
    dh.docker(&["network", "rm", "mvnet"]).unwrap();
    let v = loader.cli("verify", &["--docker-host", &url]).unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));

    // A network removed: its link is released with its bridge.
    dh.docker(&["rm", "-f", "oncustom"]).unwrap();
    dh.docker(&["network", "rm", "custom"]).unwrap();
    let link = pin_dir(&bpffs).join("links/custom0");
    assert!(
        wait_until(Duration::from_secs(3), || !link.exists()),
        "custom0's pin left: {}",
        loader.log()
    );
    assert!(loader.is_running(), "{}", loader.log());
}

/// Host-network containers: judged by the cgroup hooks under the engine's
/// cgroup parent (found by `auto` from its running container), from their
/// first syscall.
#[test]
fn host_network_containers_are_refused_at_once() {
    require_privileges!(docker);
    let bpffs = BpffsMount::new();
    let events = EventsSocket::new("cov");
    let dh = start_docker("cvhost");
    let _imds = tcp_server(dh.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _smtp = tcp_server(dh.cloud(), addrs::SMTP_V4, 25).unwrap();
    let url = dh.docker_host();
    let parent = format!("/{}", dh.cgroup_parent());
    // Running before the loader, and for the whole test: `auto` finds the
    // engine's cgroup parent from it (and never falls back to /docker).
    dh.docker(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "--network",
        "host",
        images::BUSYBOX_IMAGE,
        "sleep",
        "3600",
    ])
    .unwrap();
    let docker_cgroup_existed =
        egress_loader::kernel::cgroup::CgroupFs::find().is_some_and(|f| f.id("docker").is_some());
    let mut loader = LoaderProcess::run_in_ns(
        dh.host(),
        &pin_dir(&bpffs),
        &[
            "--iface",
            "docker0",
            "--docker-host",
            &url,
            "--cgroup",
            "auto",
            "--smtp-rate",
            "1/hour",
            "--smtp-burst",
            "3",
            "--metrics-addr",
            &format!("127.0.0.1:{METRICS_PORT}"),
            "--events-socket",
            events.arg(),
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert!(
        wait_until(Duration::from_secs(20), || cgroup_attached(
            &status(&loader),
            &parent
        )),
        "the cgroup hooks are not on {parent}: {}\n{}",
        status(&loader),
        loader.log()
    );
    assert!(
        loader.log().contains(&format!(
            "target {parent} (auto: the parent of the engine's containers)"
        )),
        "{}",
        loader.log()
    );
    if !docker_cgroup_existed {
        assert!(
            egress_loader::kernel::cgroup::CgroupFs::find()
                .is_some_and(|f| f.id("docker").is_none()),
            "auto created the machine's /docker"
        );
    }
    let (_follower, rx) = follow_events(dh.host(), &events);

    // First action: the metadata service. Refused by connect(), at once.
    // The container stays a second after it: the loader names the sender of
    // a drop event from its cgroup, which must still exist when the event is
    // read (a container gone within milliseconds is named by cgroup id only:
    // docs/observability.md).
    let out = docker_run(
        &dh,
        &[
            "--name",
            "hostnet1",
            "--network",
            "host",
            images::BUSYBOX_IMAGE,
            "sh",
            "-c",
            "nc -w 5 169.254.169.254 80 </dev/null; echo rc=$?; sleep 1",
        ],
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    let c = counters(&loader);
    assert!(
        hook_packets(&c, "cgroup/connect4", "metadata_blocked") >= 1,
        "{c}"
    );
    let event = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no event naming hostnet1\n{}", loader.log()));
            if v["container"]["name"] == "hostnet1" {
                break v;
            }
        }
    };
    println!("---- event from a host-network container ----\n{event}");
    assert_eq!(event["hook"], "cgroup/connect4", "{event}");
    assert_eq!(event["verdict"], "metadata_blocked", "{event}");
    assert!(
        event["cgroup"].as_str().unwrap().starts_with(&parent),
        "{event}"
    );
    // A raw socket (ping): no socket hook; cgroup_skb drops the packet.
    let out = docker_run(
        &dh,
        &[
            "--network",
            "host",
            images::BUSYBOX_IMAGE,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "169.254.169.254",
        ],
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(
        hook_packets(&counters(&loader), "cgroup_skb/egress", "metadata_blocked") >= 1,
        "{}",
        counters(&loader)
    );
    // The host's own processes in the same namespace keep their access.
    assert_http_ok(dh.host(), addrs::IMDS_V4, 80);

    // A bridged container is the bridge's alone: the hooks do not count it.
    let hooks_before = all_hook_packets(&counters(&loader));
    let out = docker_run(
        &dh,
        &[
            images::BUSYBOX_IMAGE,
            "sh",
            "-c",
            "nc -w 1 169.254.169.254 80 </dev/null; echo rc=$?",
        ],
    );
    assert!(!out.contains("Operation not permitted"), "{out}");
    assert_eq!(all_hook_packets(&counters(&loader)), hooks_before);

    // SMTP: one bucket. Three connects from the host network fit the burst
    // (each charged once, its SYN not again), then a bridged container and
    // the host network are both over the rate.
    let out = docker_run(
        &dh,
        &[
            "--network",
            "host",
            images::BUSYBOX_IMAGE,
            "sh",
            "-c",
            "for i in 1 2 3; do nc -w 2 198.51.100.25 25 </dev/null && echo connected$i; done",
        ],
    );
    for i in 1..=3 {
        assert!(out.contains(&format!("connected{i}")), "attempt {i}: {out}");
    }
    let out = docker_run(
        &dh,
        &[
            images::BUSYBOX_IMAGE,
            "sh",
            "-c",
            "nc -w 1 198.51.100.25 25 </dev/null && echo connected",
        ],
    );
    assert!(!out.contains("connected"), "bridged, over the rate: {out}");
    // A dropped SYN may be retransmitted before nc's timeout: each copy is
    // limited (and counted) again, so the bridged step counts one or more.
    let bridged_limited = packets(&counters(&loader), "smtp_limited");
    assert!(bridged_limited >= 1, "bridged, over the rate: not limited");
    let out = docker_run(
        &dh,
        &[
            "--network",
            "host",
            images::BUSYBOX_IMAGE,
            "sh",
            "-c",
            "nc -w 2 198.51.100.25 25 </dev/null && echo connected",
        ],
    );
    assert!(
        out.contains("Operation not permitted") && !out.contains("connected"),
        "{out}"
    );
    let c = counters(&loader);
    assert_eq!(packets(&c, "smtp_allowed"), 3, "{c}");
    // The host network's refused connect() is judged once, at the hook.
    assert_eq!(packets(&c, "smtp_limited"), bridged_limited + 1, "{c}");

    // status: every container with its hook.
    dh.docker(&[
        "run",
        "-d",
        "--name",
        "bridged",
        images::BUSYBOX_IMAGE,
        "sleep",
        "3600",
    ])
    .unwrap();
    let s = container_coverage(&loader, &dh, "sleeper");
    assert_eq!(
        (s["hook"].as_str(), s["via"][0].as_str()),
        (Some("cgroup"), Some(parent.as_str())),
        "{s}"
    );
    assert!(
        s["caveats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("AF_PACKET")),
        "{s}"
    );
    let b = container_coverage(&loader, &dh, "bridged");
    assert_eq!(b["hook"], "veth", "{b}");
    // CAP_NET_RAW on the host network: partly covered (AF_PACKET passes
    // the cgroup hooks), never plainly covered; without it, covered.
    dh.docker(&[
        "run",
        "-d",
        "--name",
        "noraw",
        "--network",
        "host",
        "--cap-drop",
        "NET_RAW",
        images::BUSYBOX_IMAGE,
        "sleep",
        "3600",
    ])
    .unwrap();
    assert_eq!(s["partly_covered"], serde_json::json!(["af_packet"]), "{s}");
    let n = container_coverage(&loader, &dh, "noraw");
    assert_eq!(n["hook"], "cgroup", "{n}");
    assert!(n.get("partly_covered").is_none(), "{n}");
    assert!(b.get("partly_covered").is_none(), "{b}");
    let af_packet = || {
        gauge(
            &metrics_text(dh.host(), METRICS_PORT),
            "egress_partly_covered_containers{reason=\"af_packet\"}",
        )
    };
    assert!(
        wait_until(Duration::from_secs(15), || af_packet() == Some(1.0)),
        "{}",
        metrics_text(dh.host(), METRICS_PORT)
    );
    let text = loader.cli("status", &["--docker-host", &url]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    println!("---- status ----\n{text}");
    assert!(text.contains("0 UNCOVERED, 1 PARTLY COVERED"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("sleeper")
            && l.contains("cgroup (")
            && l.contains("PARTLY COVERED (af_packet)")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("noraw") && !l.contains("PARTLY")),
        "{text}"
    );
    // `explain` names the hook the real traffic above met: the cgroup hooks
    // for a host-network container (EPERM, no packet), its veth for a
    // bridged one.
    let explain = |name: &str| {
        loader
            .cli_json(
                "explain",
                &[
                    "--from",
                    name,
                    "--docker-host",
                    &url,
                    "--to",
                    "169.254.169.254:80/tcp",
                ],
            )
            .unwrap_or_else(|e| panic!("explain --from {name}: {e:#}"))
    };
    let x = explain("sleeper");
    println!("---- explain --from sleeper ----\n{x}");
    assert_eq!(
        (
            x["hook_kind"].as_str(),
            x["verdict"].as_str(),
            x["action"].as_str()
        ),
        (Some("cgroup"), Some("metadata_blocked"), Some("reject")),
        "{x}"
    );
    assert!(
        x["via"].as_str().is_some_and(|v| v.starts_with(&parent)),
        "{x}"
    );
    assert!(
        x["reply"].as_str().is_some_and(|r| r.contains("EPERM")),
        "{x}"
    );
    let x = explain("bridged");
    assert_eq!(
        (x["hook_kind"].as_str(), x["via"].as_str()),
        (Some("veth"), b["via"][0].as_str()),
        "{x}"
    );
    // verify proves the cgroup hooks too: a connect() from a new cgroup
    // below the engine's parent is refused.
    let v = loader.cli("verify", &["--docker-host", &url]).unwrap();
    let vt = String::from_utf8_lossy(&v.stdout).into_owned();
    println!("---- verify ----\n{vt}");
    assert!(v.status.success(), "{vt}");
    assert!(vt.contains(&format!("PASS  cgroup {parent}")), "{vt}");
    assert!(vt.contains("refused (EPERM); metadata_blocked +1"), "{vt}");
    assert!(
        vt.contains("note: container sleeper: PARTLY COVERED: holds CAP_NET_RAW"),
        "{vt}"
    );
    assert!(!vt.contains("container noraw"), "{vt}");
    // The only container with CAP_NET_RAW on the host network gone: 0, while
    // noraw (host network, no CAP_NET_RAW) still runs.
    dh.docker(&["rm", "-f", "sleeper"]).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || af_packet() == Some(0.0)),
        "{}",
        metrics_text(dh.host(), METRICS_PORT)
    );
    assert_eq!(
        gauge(
            &metrics_text(dh.host(), METRICS_PORT),
            "egress_uncovered_containers"
        ),
        Some(0.0)
    );
    assert!(loader.is_running(), "{}", loader.log());
}
