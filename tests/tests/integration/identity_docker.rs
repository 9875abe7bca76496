//! Identity on a real Docker engine (in its own namespaces): exceptions by
//! container label follow the containers and survive a killed loader, a
//! container forging the labelled one's address gets nothing, and fifty
//! containers started at once get no metadata request through while their
//! veths are being attached.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::*;
use egress_tests::{
    BpffsMount, LoaderProcess, addrs,
    docker::{engine::DockerHost, images},
    require_privileges,
    traffic::tcp_server,
    unique_suffix, wait_until,
};

const LABEL: &str = "egress-filter.allow-metadata";

/// `timeout 2 wget` of the metadata address inside container `name`
/// (Debian's busybox wget has no -T): whether it got an answer.
fn reaches_metadata(dh: &DockerHost, name: &str) -> bool {
    let out = dh
        .docker_output(
            &[
                "exec",
                name,
                "sh",
                "-c",
                &format!(
                    "timeout 2 wget -q -O- http://{}/ >/dev/null 2>&1 && echo REACHED || echo BLOCKED",
                    addrs::IMDS_V4
                ),
            ],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("docker exec {name}: {e:#}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("REACHED") || text.contains("BLOCKED"),
        "docker exec {name}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.contains("REACHED")
}

fn start_loader_on(dh: &DockerHost, bpffs: &BpffsMount, config: &std::path::Path) -> LoaderProcess {
    let mut loader = LoaderProcess::run_in_ns(
        dh.host(),
        &pin_dir(bpffs),
        &[
            "--rescan",
            RESCAN,
            "--iface",
            "docker0",
            "--events-socket",
            "none",
            "--docker-host",
            &dh.docker_host(),
            "--config",
            config.to_str().unwrap(),
            "--no-watch-config",
        ],
    )
    .unwrap_or_else(|e| panic!("starting egress-loader: {e:#}"));
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    loader
}

#[test]
fn exceptions_follow_container_labels_and_survive_a_killed_loader() {
    require_privileges!(docker);
    let bpffs = BpffsMount::new();
    let dh = DockerHost::start("idexc").unwrap_or_else(|e| panic!("starting Docker: {e:#}"));
    images::build_busybox_image(&dh).unwrap_or_else(|e| panic!("busybox image: {e:#}"));
    let imds = tcp_server(dh.cloud(), addrs::IMDS_V4, 80).unwrap();
    let dir = TempDir::new("idexc");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("[[exception]]\nlabel = \"{LABEL}\"\ndestinations = [\"169.254.169.254/32\"]\n"),
    )
    .unwrap();
    let suffix = unique_suffix();
    let (trusted, other) = (format!("idt-{suffix}"), format!("ido-{suffix}"));

    let mut loader = start_loader_on(&dh, &bpffs, &config);
    let trusted_ip = run(&dh, &trusted, &[LABEL]);
    run(&dh, &other, &[]);
    // The exception takes effect once the engine reports the container.
    let ok = wait_until(Duration::from_secs(10), || {
        let c = counters(&loader);
        endpoint_of(&c, &trusted).is_some_and(|e| e["excepted"] == true)
            && endpoint_of(&c, &other).is_some_and(|e| e["excepted"] == false)
    });
    assert!(ok, "endpoints: {}\n{}", counters(&loader), loader.log());

    assert!(
        reaches_metadata(&dh, &trusted),
        "the labelled container is excepted"
    );
    assert!(!reaches_metadata(&dh, &other), "an unlabelled one is not");
    let c = counters(&loader);
    assert!(endpoint_count(&c, &trusted, "excepted") >= 1, "{c}");
    assert!(endpoint_count(&c, &other, "metadata_blocked") >= 1, "{c}");

    // The unlabelled container forges the labelled one's address.
    let before = endpoint_count(&counters(&loader), &other, "metadata_blocked");
    let excepted_before = endpoint_count(&counters(&loader), &trusted, "excepted");
    dh.forge_syns(&other, trusted_ip, addrs::IMDS_V4, 80, 42000, 5)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c = counters(&loader);
    assert_eq!(
        endpoint_count(&c, &other, "metadata_blocked") - before,
        5,
        "the forged SYNs are judged as the forger's: {c}"
    );
    assert_eq!(endpoint_count(&c, &trusted, "excepted"), excepted_before);

    // SIGKILL: the pinned links and entries keep the exception in force.
    loader.kill().unwrap();
    assert!(reaches_metadata(&dh, &trusted), "while no loader runs");
    assert!(!reaches_metadata(&dh, &other), "while no loader runs");
    let mut loader = start_loader_on(&dh, &bpffs, &config);
    assert!(reaches_metadata(&dh, &trusted), "after the restart");
    assert!(!reaches_metadata(&dh, &other), "after the restart");
    let accepted = imds.accepted();
    assert!(
        accepted >= 3,
        "the metadata server saw the excepted requests: {accepted}"
    );

    // The exception ends when the container stops: its entry goes with it.
    dh.docker(&["stop", "-t", "0", &trusted]).unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        endpoint_of(&counters(&loader), &trusted).is_none()
    });
    assert!(gone, "{}", counters(&loader));
    assert!(loader.is_running(), "{}", loader.log());
    for n in [&trusted, &other] {
        let _ = dh.docker(&["rm", "-f", n]);
    }
    let _ = loader.terminate(Duration::from_secs(5));
}

/// Fifty containers started in parallel, each asking the metadata service
/// as its very first action: none gets an answer, whether its veth program
/// is attached by then or the bridge still judges for it.
#[test]
fn fifty_containers_racing_their_attach_get_nothing_through() {
    require_privileges!(docker);
    const N: usize = 50;
    let bpffs = BpffsMount::new();
    let dh = DockerHost::start("idrace").unwrap_or_else(|e| panic!("starting Docker: {e:#}"));
    images::build_busybox_image(&dh).unwrap_or_else(|e| panic!("busybox image: {e:#}"));
    let imds = tcp_server(dh.cloud(), addrs::IMDS_V4, 80).unwrap();
    let dir = TempDir::new("idrace");
    let config = dir.join("config.toml");
    std::fs::write(&config, "").unwrap();
    let loader = start_loader_on(&dh, &bpffs, &config);

    let suffix = unique_suffix();
    let names: Vec<String> = (0..N).map(|i| format!("idr{i}-{suffix}")).collect();
    let script = format!(
        "if timeout 2 wget -q -O- http://{}/ >/dev/null 2>&1; then echo GOT-THROUGH; else echo blocked; fi; sleep 600",
        addrs::IMDS_V4
    );
    let started = Instant::now();
    let errors = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for chunk in names.chunks(N / 5) {
            let (dh, script, errors) = (&dh, &script, errors.clone());
            s.spawn(move || {
                for name in chunk {
                    if let Err(e) = dh.docker(&[
                        "run",
                        "-d",
                        "--name",
                        name,
                        images::BUSYBOX_IMAGE,
                        "sh",
                        "-c",
                        script,
                    ]) {
                        errors.lock().unwrap().push(format!("{name}: {e:#}"));
                    }
                }
            });
        }
    });
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{errors:?}");
    eprintln!("{N} containers started in {:?}", started.elapsed());
    // Every probe has finished (2 s timeout each).
    let mut outcomes = Vec::new();
    for name in &names {
        let mut line = String::new();
        let done = wait_until(Duration::from_secs(20), || {
            line = dh.docker(&["logs", name]).unwrap_or_default();
            line.contains("GOT-THROUGH") || line.contains("blocked")
        });
        assert!(done, "{name} never reported: {line:?}");
        outcomes.push((name.clone(), line));
    }
    let through: Vec<&(String, String)> = outcomes
        .iter()
        .filter(|(_, l)| l.contains("GOT-THROUGH"))
        .collect();
    assert!(through.is_empty(), "got through: {through:?}");
    assert_eq!(
        imds.accepted(),
        0,
        "the metadata server accepted a connection"
    );
    // And each of them ended up with its own endpoint.
    let c = counters(&loader);
    let endpoints = c["endpoints"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        endpoints >= N,
        "{endpoints} endpoints for {N} containers: {c}"
    );
    let blocked = packets(&c, "metadata_blocked");
    assert!(blocked >= N as u64, "{blocked} drops for {N} probes: {c}");
    for name in &names {
        let _ = dh.docker(&["rm", "-f", name]);
    }
}

fn run(dh: &DockerHost, name: &str, labels: &[&str]) -> Ipv4Addr {
    dh.run_sleeper(name, labels)
        .unwrap_or_else(|e| panic!("{e:#}"))
}
