//! The loader's life: bad input refused without touching the kernel,
//! missing privileges and bpffs explained, the legacy netlink attach path,
//! restarts with a changed config, reload and SIGHUP.

use std::{
    process::Output,
    time::{Duration, Instant},
};

use crate::common::*;
use egress_loader::policy::refused::REFUSED_FILES;
use egress_tests::{BpffsMount, NetNs, addrs, loader_bin, require_privileges, traffic};
use serde_json::Value;

/// One `egress-loader ARGS` in `ns`, with a time limit.
fn loader_once(ns: &NetNs, args: &[&str]) -> Output {
    let mut all = vec![
        "10".to_owned(),
        loader_bin().unwrap().to_str().unwrap().to_owned(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let mut cmd = ns.command("timeout");
    cmd.args(&all);
    cmd.output().expect("run egress-loader")
}

/// status without the fields that legitimately differ between reads: the
/// loader's own record of its configuration counts refusals.
fn policy_snapshot(s: &Value) -> Value {
    let mut s = s.clone();
    s.as_object_mut().unwrap().remove("loader_running");
    s.as_object_mut().unwrap().remove("config");
    s
}

const BAD_FLAGS: &[(&[&str], &str)] = &[
    (&["--smtp-rate", "0/minute"], "--smtp-rate"),
    (&["--smtp-rate", "5/lightyear"], "--smtp-rate"),
    (&["--smtp-burst", "0"], "--smtp-burst"),
    (&["--smtp-ports", "0"], "--smtp-ports[0]"),
    (&["--smtp-ports", "70000"], "--smtp-ports[0]"),
    (&["--smtp-ports", "25,x"], "--smtp-ports"),
    (&["--block", "10.0.0.0/33"], "--block"),
    (&["--block", "10.0.0.0/8:tcp/0"], "--block"),
    (&["--scope", "x"], "--scope"),
    (&["--iface", ""], "--iface[0]"),
    (&["--attach-mode", "bogus"], "--attach-mode"),
    (&["--rescan", "0"], "--rescan"),
];

/// A valid file that leaves metadata open is accepted, but `check-config`
/// and `run` say so loudly; one extra `[[block]]` keeps every default and
/// draws no warning.
#[test]
fn open_metadata_is_warned_about() {
    require_privileges!();
    let topo = topology("warnmd");
    let bpffs = BpffsMount::new();
    let dir = TempDir::new("warnmd");
    let check = |content: &str| {
        let f = dir.join("c.toml");
        std::fs::write(&f, content).unwrap();
        let out = loader_once(topo.host(), &["check-config", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{content:?}: {}", stderr(&out));
        stderr(&out)
    };
    let quiet = check("[[block]]\ncidr = \"10.0.0.0/8\"\n");
    assert!(!quiet.contains("WARNING"), "{quiet}");
    let loud = check("defaults = false\n[[block]]\ncidr = \"10.0.0.0/8\"\n");
    assert!(loud.contains("WARNING"), "{loud}");
    for addr in [
        "169.254.169.254:80/tcp",
        "[fd00:ec2::254]:80/tcp",
        "169.254.170.23:80/tcp",
    ] {
        assert!(loud.contains(addr), "names {addr}: {loud}");
    }
    let one = check("[[unblock]]\nname = \"tencent\"\n");
    assert!(
        one.contains("169.254.0.23:80/tcp") && !one.contains("169.254.169.254:80"),
        "{one}"
    );
    // `run` says the same in its log, and still runs.
    let f = dir.join("open.toml");
    std::fs::write(&f, "defaults = false\n").unwrap();
    let mut loader = start_loader(&topo, &bpffs, &["--config", f.to_str().unwrap()]);
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let log = loader.log();
    assert!(
        log.contains("WARN") && log.contains("169.254.169.254:80/tcp"),
        "{log}"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    require_privileges!();
    let topo = topology("badin");
    let bpffs = BpffsMount::new();
    let dir = TempDir::new("badin");
    let config = dir.join("egress.toml");
    std::fs::write(
        &config,
        "[[block]]\ncidr = \"169.254.169.254/32\"\naction = \"reject\"\n[smtp]\nburst = 4\n",
    )
    .unwrap();
    let mut loader = start_loader(&topo, &bpffs, &["--config", config.to_str().unwrap()]);
    let before = policy_snapshot(&wait_attached(&mut loader, "docker0", READY_TIMEOUT));
    let pins = pin_dir(&bpffs);
    let pins = pins.to_str().unwrap();

    for (content, field) in REFUSED_FILES {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, content).unwrap();
        let check = loader_once(topo.host(), &["check-config", bad.to_str().unwrap()]);
        assert_eq!(
            check.status.code(),
            Some(2),
            "check-config {content:?}: {}",
            stderr(&check)
        );
        assert!(
            stderr(&check).contains(field),
            "check-config {content:?} must name {field:?}: {}",
            stderr(&check)
        );
        let run = loader_once(
            topo.host(),
            &["run", "--pin-dir", pins, "--config", bad.to_str().unwrap()],
        );
        assert_eq!(
            run.status.code(),
            Some(2),
            "run with {content:?}: {}",
            stderr(&run)
        );
        assert!(
            stderr(&run).contains(field),
            "run with {content:?} must name {field:?}: {}",
            stderr(&run)
        );
        // The running loader's own file turned bad: reload refuses, the loader stays.
        std::fs::write(&config, content).unwrap();
        let reload = loader_once(topo.host(), &["reload", "--pin-dir", pins]);
        assert_eq!(
            reload.status.code(),
            Some(2),
            "reload of {content:?}: {}",
            stderr(&reload)
        );
        assert!(
            loader.is_running(),
            "a refused reload must leave the loader running"
        );
    }
    for (flags, field) in BAD_FLAGS {
        let mut args = vec!["run", "--pin-dir", pins];
        args.extend_from_slice(flags);
        let run = loader_once(topo.host(), &args);
        assert_eq!(
            run.status.code(),
            Some(2),
            "run {flags:?}: {}",
            stderr(&run)
        );
        assert!(
            stderr(&run).contains(field),
            "run {flags:?} must name {field:?}: {}",
            stderr(&run)
        );
    }
    // SIGHUP with the bad file in place: refused inside the loader too.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(loader.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        loader.log().contains("keeping the policy in force"),
        "{}",
        loader.log()
    );
    let after = policy_snapshot(&status(&loader));
    assert_eq!(
        before, after,
        "the kernel state changed after refused input"
    );
    assert_http_refused(topo.container(0).ns(), addrs::IMDS_V4, 80);
}

#[test]
fn missing_privileges_and_bpffs_are_explained() {
    require_privileges!();
    let ns = NetNs::new("nopriv").unwrap();
    let bpffs = BpffsMount::new();
    let pins = pin_dir(&bpffs);
    let bin = loader_bin().unwrap();
    let out = ns
        .command("setpriv")
        .args([
            "--bounding-set",
            "-bpf,-net_admin,-sys_admin,-perfmon",
            "--",
        ])
        .arg(&bin)
        .args(["run", "--pin-dir", pins.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&out);
    // 4: this host cannot run the filter (nothing was changed).
    assert_eq!(out.status.code(), Some(4), "{err}");
    for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "--cap-add"] {
        assert!(err.contains(cap), "the message must name {cap}: {err}");
    }
    assert!(!pins.exists(), "nothing may be created without privileges");
    // Privileged, but the pin dir is on an ordinary filesystem.
    let plain = TempDir::new("nobpffs");
    let out = loader_once(
        &ns,
        &["run", "--pin-dir", plain.join("egress").to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("not on a bpf filesystem") && err.contains("mount -t bpf bpf"),
        "{err}"
    );
}

fn tc_filters(ns: &NetNs, iface: &str) -> String {
    ns.exec_stdout(&["tc", "filter", "show", "dev", iface, "ingress"])
        .unwrap_or_default()
}

#[test]
fn netlink_attach_path_filters_adopts_and_detaches() {
    require_privileges!();
    let topo = topology("nlpath");
    let _imds = traffic::tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _ok = traffic::tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let bpffs = BpffsMount::new();
    let mut first = start_loader(&topo, &bpffs, &["--attach-mode", "netlink"]);
    let st = wait_attached(&mut first, "docker0", READY_TIMEOUT);
    assert_eq!(
        interface(&st, "docker0").unwrap()["attach_type"],
        "netlink",
        "{st}"
    );
    assert!(tc_filters(topo.host(), "docker0").contains("egress_filter"));
    assert!(
        !pin_dir(&bpffs).join("links/docker0").exists(),
        "netlink attachments carry no pin"
    );
    let c0 = topo.container(0).ns();
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    assert_http_ok(c0, addrs::SMTP_V4, 8080);

    let (second, attempts, successes) = traffic::with_probe(c0, || {
        first.kill().unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let mut second = start_loader(&topo, &bpffs, &["--attach-mode", "netlink"]);
        wait_attached(&mut second, "docker0", READY_TIMEOUT);
        // The killed loader's filter is still attached, so "attached" comes
        // at once: wait for the new loader to have taken it over.
        let deadline = Instant::now() + READY_TIMEOUT;
        while !second.log().contains("adopted the existing attachment") && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        second
    });
    assert!(attempts >= 3, "the probe ran ({attempts} attempts)");
    assert_eq!(successes, 0, "metadata was reachable during the restart");
    // `status` reads the first loader's attachments at once: the second
    // one's log may still be to come (it loads and verifies two programs).
    assert!(
        egress_tests::wait_until(READY_TIMEOUT, || second
            .log()
            .contains("adopted the existing attachment")),
        "{}",
        second.log()
    );
    let filters = tc_filters(topo.host(), "docker0");
    // One line per filter; ours names egress_filter twice (filter and program).
    let ours = filters
        .lines()
        .filter(|l| l.contains("handle") && l.contains("egress_filter"))
        .count();
    assert_eq!(ours, 1, "exactly one filter, replaced in place: {filters}");

    let out = second.cli("detach", &[] as &[&str]).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!tc_filters(topo.host(), "docker0").contains("egress_filter"));
    assert_http_ok(c0, addrs::IMDS_V4, 80);
}

#[test]
fn restart_with_a_changed_config_never_opens_a_gap() {
    require_privileges!();
    let topo = topology("rstcfg");
    let _imds = traffic::tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _web = traffic::tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    let mut first = start_loader(&topo, &bpffs, &[]);
    wait_attached(&mut first, "docker0", READY_TIMEOUT);
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    assert_http_ok(c0, addrs::SMTP_V4, 8080);
    let blocked_before = packets(&counters(&first), "metadata_blocked");

    let dir = TempDir::new("rstcfg");
    let config = dir.join("egress.toml");
    std::fs::write(
        &config,
        "defaults = false\n[[block]]\ncidr = \"169.254.169.254/32\"\naction = \"reject\"\n\
         [[block]]\ncidr = \"198.51.100.25/32\"\nprotocol = \"tcp\"\nports = [8080]\n",
    )
    .unwrap();
    let ((second, st), attempts, successes) = traffic::with_probe(c0, || {
        std::thread::sleep(Duration::from_millis(300));
        first.kill().unwrap();
        let second = start_loader(&topo, &bpffs, &["--config", config.to_str().unwrap()]);
        // The killed loader's link stays attached (that is the point), so
        // wait for the new loader to have taken it over, not just "attached".
        let deadline = Instant::now() + READY_TIMEOUT;
        while !second.log().contains("adopted the existing attachment") {
            assert!(
                Instant::now() < deadline,
                "second loader never adopted: {}",
                second.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let st = status(&second);
        std::thread::sleep(Duration::from_millis(300));
        (second, st)
    });
    assert!(attempts >= 3);
    assert_eq!(
        successes, 0,
        "metadata was reachable while the policy changed"
    );
    let blocked: Vec<&str> = st["policy"]["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        blocked,
        ["169.254.169.254/32", "198.51.100.25/32:tcp/8080"],
        "{st}"
    );
    assert_http_dropped(c0, addrs::SMTP_V4, 8080);
    assert!(
        packets(&counters(&second), "metadata_blocked") > blocked_before,
        "counters continue across the restart"
    );
}

#[test]
fn reload_and_sighup_apply_a_new_file_without_detaching() {
    require_privileges!();
    let topo = topology("reload");
    let _web = traffic::tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let bpffs = BpffsMount::new();
    let dir = TempDir::new("reload");
    let config = dir.join("egress.toml");
    std::fs::write(&config, "[[block]]\ncidr = \"169.254.169.254/32\"\n").unwrap();
    let c0 = topo.container(0).ns();
    let mut loader = start_loader(&topo, &bpffs, &["--config", config.to_str().unwrap()]);
    let st = wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let program = interface(&st, "docker0").unwrap()["program_id"].clone();
    assert_http_ok(c0, addrs::SMTP_V4, 8080);

    std::fs::write(
        &config,
        "[[block]]\ncidr = \"169.254.169.254/32\"\n[[block]]\ncidr = \"198.51.100.25/32\"\n",
    )
    .unwrap();
    let out = loader.cli("reload", &[] as &[&str]).unwrap();
    assert!(out.status.success(), "reload: {}", stderr(&out));
    assert_http_dropped(c0, addrs::SMTP_V4, 8080);
    let st = status(&loader);
    assert_eq!(
        interface(&st, "docker0").unwrap()["program_id"],
        program,
        "reload must not re-attach"
    );

    // Plain SIGHUP does the same.
    std::fs::write(&config, "[[block]]\ncidr = \"169.254.169.254/32\"\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(loader.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while traffic::http_get(c0, addrs::SMTP_V4, 8080, "/", Duration::from_millis(500)).is_err() {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the file: {}",
            loader.log()
        );
    }
}

#[test]
fn status_check_reports_health_for_liveness_probes() {
    require_privileges!();
    let topo = topology("stchk");
    let bpffs = BpffsMount::new();
    let mut loader = start_loader(&topo, &bpffs, &[]);
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let ok = loader.cli("status", &["--check"]).unwrap();
    assert!(ok.status.success(), "healthy: {}", stderr(&ok));
    loader.kill().unwrap();
    let pins = pin_dir(&bpffs);
    let dead = loader_once(
        topo.host(),
        &["status", "--check", "--pin-dir", pins.to_str().unwrap()],
    );
    assert_eq!(dead.status.code(), Some(1), "{}", stderr(&dead));
    assert!(
        stderr(&dead).contains("no loader is running"),
        "{}",
        stderr(&dead)
    );
    // Protection itself stays: the check is about the loader, not the filter.
    assert_http_refused(topo.container(0).ns(), addrs::IMDS_V4, 80);
}
