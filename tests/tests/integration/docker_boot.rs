//! The boot window, on a real engine (docs/design.md, "Real Docker,
//! still isolated": Docker inside a network namespace of the test's own): how many
//! requests from restart-always containers reach the metadata service after
//! a reboot before the filter is in force.
//!
//! A simulated reboot stops the engine (its containers stop, keeping their
//! restart policies), deletes the bridges, replaces the bpf filesystem with
//! an empty one (pins are in memory: a reboot loses them) and starts the
//! engine again, which restarts every restart-always container in no
//! particular order. Four such containers try the fake metadata service
//! every 50 ms; the service counts the answers it gave.
//!
//! 1. The container deployment (docs/deployment.md: `docker run --restart always` with
//!    the exact capabilities): three reboots, each answer counted and
//!    reported. Nothing can be asserted about the count but that the
//!    probes ran: it is the window this test measures.
//! 2. `install-unit` run from the image writes the unit and the binary into
//!    a host root; that binary then runs as the unit would: started before
//!    the engine, which starts only after READY=1 (Type=notify,
//!    Before=docker.service). Three reboots: no answer may get through.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use crate::common::*;
use egress_tests::{
    BpffsMount, ChildGuard, addrs,
    docker::{
        DockerHost,
        images::{self, BUSYBOX_IMAGE},
    },
    traffic::{ServerGuard, tcp_server},
};
use egress_tests::{report, require_privileges};

const FILTER_IMAGE: &str = "egress-filter:boot";
const FILTER: &str = images::FILTER_CONTAINER;
const PROBES: usize = 4;
const REBOOTS: usize = 3;
/// After the filter is attached (or the probes are back), how long to go
/// on counting.
const SETTLE: Duration = Duration::from_secs(2);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One probe: a restart-always container trying the metadata address every
/// 50 ms (each try in the background, bounded by 1 s), logging each result.
fn start_probe(dh: &DockerHost, i: usize) {
    let script = format!(
        "while :; do \
           (if timeout 1 wget -q -O /dev/null http://{}/ 2>/dev/null; \
            then echo THROUGH; else echo blocked; fi) & \
           sleep 0.05; \
         done",
        addrs::IMDS_V4
    );
    let name = format!("probe-{i}");
    dh.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--restart",
        "always",
        // busybox sh as PID 1 ignores SIGTERM: do not wait 10 s at shutdown.
        "--stop-timeout",
        "1",
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        &script,
    ])
    .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
}

fn running(dh: &DockerHost, name: &str) -> bool {
    dh.docker(&["inspect", "--format", "{{.State.Running}}", name])
        .is_ok_and(|s| s == "true")
}

/// Lines the probes logged since `since`, as (through, blocked).
fn probe_results(dh: &DockerHost, since: &str) -> (usize, usize) {
    let (mut through, mut blocked) = (0, 0);
    for i in 0..PROBES {
        let out = dh
            .docker_output(
                &["logs", "--since", since, &format!("probe-{i}")],
                Duration::from_secs(30),
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        through += text.lines().filter(|l| l.trim() == "THROUGH").count();
        blocked += text.lines().filter(|l| l.trim() == "blocked").count();
    }
    (through, blocked)
}

/// Now, as `docker logs --since` takes it (a Unix timestamp).
fn now_for_logs() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

fn filter_attached(dh: &DockerHost) -> bool {
    dh.docker(&["exec", FILTER, "egress-loader", "status", "--json"])
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .is_some_and(|st| {
            st["interfaces"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|i| i["name"] == "docker0" && i["attached"] == true)
            })
        })
}

struct Reboot {
    answers: usize,
    /// From the engine's start until the filter ran on docker0 (container
    /// deployment) or until every probe ran again (unit).
    until: Duration,
    tries: usize,
}

/// Stops the engine, empties bpffs, runs `before_engine` (the unit's
/// loader, for the second deployment), starts the engine and counts the
/// metadata service's answers until `done` and [`SETTLE`] after it.
fn reboot(
    dh: &mut DockerHost,
    bpffs: &BpffsMount,
    imds: &ServerGuard,
    before_engine: impl FnOnce(&DockerHost),
    mut done: impl FnMut(&DockerHost) -> bool,
) -> Reboot {
    dh.stop_engine()
        .unwrap_or_else(|e| panic!("stopping the engine: {e:#}"));
    bpffs.reset().unwrap();
    before_engine(dh);
    let since = now_for_logs();
    let answered_before = imds.accepted();
    let started = Instant::now();
    dh.start_engine()
        .unwrap_or_else(|e| panic!("starting the engine again: {e:#}"));
    let ok = egress_tests::wait_until(READY_TIMEOUT, || done(dh));
    let until = started.elapsed();
    assert!(
        ok,
        "not back {READY_TIMEOUT:?} after the engine started\n{}",
        dh.logs()
    );
    std::thread::sleep(SETTLE);
    let answers = imds.accepted() - answered_before;
    let (through, blocked) = probe_results(dh, &since);
    // Each probe logs a try when it ends (up to 1 s later), so the
    // container's count can trail the server's.
    assert!(
        through <= answers + PROBES * 20,
        "the probes saw {through} answers, the service gave {answers}"
    );
    Reboot {
        answers,
        until,
        tries: through + blocked,
    }
}

/// The unit's loader on the host: the binary install-unit wrote, run as
/// ExecStart runs it (with the test's pin dir and a private state file),
/// with a NOTIFY_SOCKET; returns once READY=1 came.
fn start_unit_loader(
    dh: &DockerHost,
    bin: &Path,
    config: &Path,
    pins: &Path,
    dir: &Path,
) -> (ChildGuard, Duration) {
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let log = std::fs::File::create(dir.join("unit-loader.log")).unwrap();
    let mut cmd = dh.host().command(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .arg("--pin-dir")
        .arg(pins)
        .args(["--events-socket", "none", "--no-docker"])
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let started = Instant::now();
    let mut child = ChildGuard::spawn(cmd, "egress-loader run (as the unit)").unwrap();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
        {
            return (child, started.elapsed());
        }
        assert!(
            child.is_running() && started.elapsed() < READY_TIMEOUT,
            "no READY=1 from the unit's loader: {}",
            std::fs::read_to_string(dir.join("unit-loader.log")).unwrap_or_default()
        );
    }
}

#[test]
fn docker_boot_window() {
    require_privileges!(docker);
    let loader = images::image_loader_bin()
        .unwrap_or_else(|e| panic!("a statically linked egress-loader for the image: {e:#}"));
    let bpffs = BpffsMount::new();
    let mut dh = DockerHost::start("dkboot").unwrap_or_else(|e| panic!("starting Docker: {e:#}"));
    let imds = tcp_server(dh.cloud(), addrs::IMDS_V4, 80).unwrap();
    images::build_busybox_image(&dh).unwrap_or_else(|e| panic!("busybox image: {e:#}"));
    images::build_filter_image(&dh, &loader, FILTER_IMAGE)
        .unwrap_or_else(|e| panic!("filter image: {e:#}"));
    report!(
        "engine: Docker {} in netns {}",
        dh.server_version(),
        dh.host().name()
    );

    // 1. The container deployment, as docs/deployment.md runs it.
    let mut args = images::filter_run_args(&dh, bpffs.path());
    args.push(FILTER_IMAGE.into());
    dh.docker(&args)
        .unwrap_or_else(|e| panic!("starting the filter: {e:#}"));
    assert!(
        egress_tests::wait_until(READY_TIMEOUT, || filter_attached(&dh)),
        "the filter container never attached"
    );
    for i in 0..PROBES {
        start_probe(&dh, i);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(imds.accepted(), 0, "metadata reached while the filter ran");

    let mut container = Vec::new();
    for n in 1..=REBOOTS {
        let r = reboot(&mut dh, &bpffs, &imds, |_| {}, filter_attached);
        report!(
            "container deployment, reboot {n}: {} requests answered by the metadata service \
             ({} tries logged), filter attached {:.1} s after the engine started",
            r.answers,
            r.tries,
            r.until.as_secs_f64()
        );
        assert!(r.tries > 0, "the probes did not run after reboot {n}");
        container.push(r);
    }

    // 2. install-unit from the image, onto a host root of the test's.
    let host_root = TempDir::new("bootroot");
    std::fs::create_dir_all(host_root.join("etc/systemd")).unwrap();
    let mount = format!("{}:/host", host_root.display());
    let out = dh
        .docker(&[
            "run",
            "--rm",
            "-v",
            &mount,
            FILTER_IMAGE,
            "install-unit",
            "--root",
            "/host",
        ])
        .unwrap_or_else(|e| panic!("install-unit from the image: {e:#}"));
    report!("$ docker run --rm -v {mount} {FILTER_IMAGE} install-unit --root /host\n{out}");
    let bin = host_root.join("usr/local/bin/egress-loader");
    let unit = std::fs::read_to_string(host_root.join("etc/systemd/system/egress-filter.service"))
        .unwrap();
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/egress-loader run --config /etc/egress-filter/config.toml"
    ));
    assert!(unit.contains("Before=docker.service") && unit.contains("Type=notify"));
    // As the printed commands say: the container goes, the unit takes over.
    dh.docker(&["update", "--restart", "no", FILTER]).unwrap();
    dh.docker(&["rm", "-f", FILTER]).unwrap();
    let dir = TempDir::new("bootunit");
    let config = host_root.join("etc/egress-filter/config.toml");
    let pins = bpffs.path().join("egress");
    let mut unit_loader: Option<ChildGuard> = None;
    let mut unit = Vec::new();
    for n in 1..=REBOOTS {
        let mut ready_after = Duration::ZERO;
        let all_probes = |dh: &DockerHost| (0..PROBES).all(|i| running(dh, &format!("probe-{i}")));
        let r = reboot(
            &mut dh,
            &bpffs,
            &imds,
            |dh| {
                // A reboot ends the loader too.
                if let Some(mut l) = unit_loader.take() {
                    let _ = l.kill();
                }
                let (child, after) = start_unit_loader(dh, &bin, &config, &pins, &dir);
                ready_after = after;
                unit_loader = Some(child);
            },
            all_probes,
        );
        report!(
            "unit (loader started before the engine, READY=1 after {} ms): reboot {n}: {} requests \
             answered ({} tries logged), every probe running {:.1} s after the engine started",
            ready_after.as_millis(),
            r.answers,
            r.tries,
            r.until.as_secs_f64()
        );
        assert!(r.tries > 0, "the probes did not run after reboot {n}");
        unit.push(r);
    }
    let figures = |v: &[Reboot]| {
        v.iter()
            .map(|r| r.answers.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    report!(
        "boot window: container deployment {} answered requests; unit {}",
        figures(&container),
        figures(&unit)
    );
    for (n, r) in unit.iter().enumerate() {
        assert_eq!(
            r.answers,
            0,
            "reboot {}: the metadata service answered with the loader started before the engine",
            n + 1
        );
    }
    drop(unit_loader);
}
