//! The loader's exit status contract (`egress-loader --help`, README.md and docs/design.md), one
//! code at a time, with the real binary in a network namespace of its own:
//! 0 success, 1 runtime failure, 2 invalid input, 3 not running, 4 this
//! host cannot run the filter. Each refusal is also checked to change
//! nothing (no pins appear).

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Output, Stdio},
    time::Duration,
};

use crate::common::*;
use egress_tests::{
    BpffsMount, ChildGuard, NetNs, loader_bin, require_privileges, topology::Topology,
    unique_suffix, wait_until,
};

/// `egress-loader ARGS` in `ns`, with a time limit.
fn loader(ns: &NetNs, args: &[&str]) -> Output {
    let mut cmd = ns.command("timeout");
    cmd.arg("60").arg(loader_bin().unwrap()).args(args);
    cmd.stdin(Stdio::null())
        .output()
        .expect("run egress-loader")
}

/// The same without the capabilities a filter needs (as a container run
/// without --cap-add would be).
fn loader_without_caps(ns: &NetNs, args: &[&str]) -> Output {
    let mut cmd = ns.command("setpriv");
    cmd.args([
        "--bounding-set",
        "-bpf,-net_admin,-sys_admin,-perfmon",
        "--",
    ])
    .arg(loader_bin().unwrap())
    .args(args);
    cmd.stdin(Stdio::null())
        .output()
        .expect("run egress-loader")
}

#[track_caller]
fn expect(out: &Output, code: i32, says: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit status\nstdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains(says),
        "{what}: stderr must say {says:?}: {err}"
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// 2 and 4 need no filter; 3 needs none to be there.
#[test]
fn refusals_before_anything_runs() {
    require_privileges!();
    let ns = NetNs::new("exref").unwrap();
    let bpffs = BpffsMount::new();
    let pins = pin_dir(&bpffs);
    let pins = path_str(&pins);
    let nosock = std::env::temp_dir().join(format!("egress-nosock-{}.sock", unique_suffix()));
    let bpffs_before = bpffs.list().unwrap();

    // 0: nothing to do with a filter.
    let out = loader(&ns, &["check-config", "--defaults"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // 3: no filter loaded at the pin dir.
    for sub in ["counters", "status", "verify"] {
        let out = loader(&ns, &[sub, "--pin-dir", pins]);
        expect(&out, 3, "no filter is loaded", sub);
    }
    let out = loader(&ns, &["status", "--check", "--pin-dir", pins]);
    expect(&out, 3, "no filter is loaded", "status --check");
    let out = loader(&ns, &["detach", "--pin-dir", pins]);
    expect(&out, 3, "nothing to detach", "detach");
    // 3: no running loader to talk to.
    let out = loader(&ns, &["reload", "--pin-dir", pins]);
    expect(&out, 3, "no running loader", "reload");
    let out = loader(&ns, &["events", "--socket", path_str(&nosock)]);
    expect(&out, 3, "cannot connect", "events");

    // 2: invalid input, checked before anything else.
    for (args, says) in [
        (&["run", "--smtp-rate", "0/minute"][..], "--smtp-rate"),
        (&["run", "--rescan", "0"][..], "--rescan"),
        (
            &["run", "--docker-host", "tcp://127.0.0.1:2375"][..],
            "--docker-host",
        ),
        (&["run", "--no-such-flag"][..], "--no-such-flag"),
        (
            &["counters", "--watch", "--interval", "0"][..],
            "--interval",
        ),
    ] {
        let mut all = args.to_vec();
        all.extend(["--pin-dir", pins]);
        expect(&loader(&ns, &all), 2, says, &args.join(" "));
    }

    // 4: this host (here: this process) cannot run the filter.
    let out = loader_without_caps(&ns, &["run", "--pin-dir", pins]);
    expect(&out, 4, "CAP_BPF", "run without capabilities");
    let out = loader_without_caps(&ns, &["detach", "--pin-dir", pins]);
    expect(&out, 4, "CAP_NET_ADMIN", "detach without capabilities");
    let plain = std::env::temp_dir().join(format!("egress-plainfs-{}", unique_suffix()));
    let out = loader(&ns, &["run", "--pin-dir", path_str(&plain.join("egress"))]);
    expect(&out, 4, "not on a bpf filesystem", "run off bpffs");
    let _ = std::fs::remove_dir_all(&plain);

    // None of it changed anything.
    assert_eq!(
        bpffs.list().unwrap(),
        bpffs_before,
        "refused commands left pins"
    );
}

/// 0 and 1 around a running loader, then 1 and 3 once it is gone.
#[test]
fn while_a_loader_runs_and_after() {
    require_privileges!();
    let topo = Topology::docker_like("exrun").unwrap_or_else(|e| panic!("topology: {e:#}"));
    let bpffs = BpffsMount::new();
    let pins = pin_dir(&bpffs);
    let pins = path_str(&pins);
    let socket = std::env::temp_dir().join(format!("egress-exit-{}.sock", unique_suffix()));
    // Filtering cni0 only: docker0 stays unfiltered, for verify to fail on.
    let mut running = start_loader(
        &topo,
        &bpffs,
        &[
            "--no-docker",
            "--iface",
            "cni0",
            "--events-socket",
            path_str(&socket),
        ],
    );
    running
        .wait_ready_until(READY_TIMEOUT, |_| true)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let host = topo.host();

    // 0
    for sub in ["status", "counters"] {
        let out = loader(host, &[sub, "--pin-dir", pins]);
        assert_eq!(out.status.code(), Some(0), "{sub}: {}", stderr(&out));
    }
    let out = loader(host, &["status", "--check", "--pin-dir", pins]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // 1: a check failed (docker0 is not filtered).
    let out = loader(host, &["verify", "--iface", "docker0", "--pin-dir", pins]);
    expect(&out, 1, "check failed", "verify on an unfiltered bridge");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL  docker0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // 1: a second loader on the same pin dir.
    let out = loader(host, &["run", "--pin-dir", pins, "--iface", "cni0"]);
    expect(&out, 1, "another egress-loader is running", "second run");
    // 1: the running loader has no file to re-read.
    let out = loader(host, &["reload", "--pin-dir", pins]);
    expect(&out, 1, "runs without --config", "reload without --config");

    // 1: the loader goes away under a follower of its events (the socket
    // comes up after the maps, which `status` already saw).
    assert!(
        wait_until(READY_TIMEOUT, || socket.exists()),
        "no events socket:\n{}",
        running.log()
    );
    let mut cmd = host.command(loader_bin().unwrap());
    cmd.args(["events", "--socket", path_str(&socket)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut events = ChildGuard::spawn(cmd, "egress-loader events").unwrap();
    let mut err = BufReader::new(events.child_mut().stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains("following drop events"), "{first}");
    let st = running.terminate(Duration::from_secs(10)).unwrap();
    assert!(
        st.success(),
        "the loader's own exit: {st}\n{}",
        running.log()
    );
    let st = events
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("events did not notice the loader exit");
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(st.code(), Some(1), "{rest}");
    assert!(rest.contains("closed the events socket"), "{rest}");

    // The pins stay: the filter is there, the loader is not.
    let out = loader(host, &["status", "--check", "--pin-dir", pins]);
    expect(&out, 1, "no loader is running", "status --check");
    let out = loader(host, &["reload", "--pin-dir", pins]);
    expect(&out, 3, "no running loader", "reload after exit");
    let out = loader(host, &["detach", "--pin-dir", pins]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = loader(host, &["detach", "--pin-dir", pins]);
    expect(&out, 3, "nothing to detach", "second detach");
}
