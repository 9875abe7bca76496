//! End to end on a real Docker engine, isolated from the machine
//! (docs/design.md, "Real Docker, still isolated"): Debian's dockerd and
//! containerd run inside a network namespace of the test's own, the filter
//! runs as the shipped image (`deploy/Dockerfile`, FROM scratch) the way the
//! docs/deployment.md says to run it, and real containers probe a fake cloud behind the
//! engine's uplink:
//!
//! 1. on docker0, and on a user-defined network created after the filter
//!    started (its bridge must be filtered within a second): the metadata
//!    address is unreachable, an ordinary destination is reachable, SMTP
//!    connection attempts are limited as configured;
//! 2. the filter container is SIGKILLed and started again, then its process
//!    is killed from outside and the restart policy brings it back, while a
//!    probe container tries the metadata address every 200 ms: nothing gets
//!    through, the counters continue;
//! 3. the filter is detached and stopped, the seed's three iptables rules go
//!    into the engine's DOCKER-USER chain, and the same traffic runs again:
//!    a table compares the verdicts; the filter may be stricter, never looser.
//!
//! Everything (daemons, containers, namespaces, mounts, cgroups, files) is
//! removed when the test ends, also when it fails.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use aya::programs::{SchedClassifier, TcAttachType};
use egress_tests::docker::images::{self, BUSYBOX_IMAGE};
use egress_tests::docker::verdict::{Comparison, render_table};
use egress_tests::docker::{DockerHost, Reach, Row, Verdict};
use egress_tests::traffic::{ServerGuard, tcp_server};
use egress_tests::{BpffsMount, NetNs, addrs};
use egress_tests::{report, require_privileges};
use serde_json::Value;

/// The filter image, built into the test's engine from deploy/Dockerfile.
const FILTER_IMAGE: &str = "egress-filter:e2e";
/// The filter container's name, as in docs/deployment.md.
const FILTER: &str = images::FILTER_CONTAINER;
/// The user-defined network created after the filter started.
const NETWORK: &str = "e2e-net";
/// The rate limit the filter (and the iptables `-m limit` rule) is given:
/// a fresh bucket admits a burst of 3, then one attempt every 2 s.
const SMTP_RATE: &str = "30/minute";
const SMTP_BURST: usize = 3;
/// Attempts per SMTP scenario, all started at once so that they all fall
/// within the first 2 s (one `nc -w 1` each).
const SMTP_ATTEMPTS: usize = 5;
/// Time for an emptied bucket to be full again (3 × 2 s), plus slack; the
/// bucket is global, so SMTP scenarios are spaced by this much.
const SMTP_REFILL: Duration = Duration::from_millis(6_500);
/// `timeout` around each HTTP probe (Debian's busybox wget has no -T).
const HTTP_TIMEOUT_S: u32 = 2;
/// How long the filter gets to load and attach.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// A bridge created after the filter started must be filtered within this.
const NEW_BRIDGE_DEADLINE: Duration = Duration::from_secs(1);

/// Wall-clock time of each phase.
struct Phases {
    start: Instant,
    last: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            marks: Vec::new(),
        }
    }

    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.marks.push((name, now - self.last));
        report!("[{:>6.1}s] {name} done", (now - self.start).as_secs_f64());
        self.last = now;
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for (name, d) in &self.marks {
            s.push_str(&format!("  {name:<42} {:>6.1} s\n", d.as_secs_f64()));
        }
        s.push_str(&format!(
            "  {:<42} {:>6.1} s\n",
            "total",
            self.start.elapsed().as_secs_f64()
        ));
        s
    }
}

/// The cloud side: the services the probes try.
struct Cloud {
    imds: ServerGuard,
    ecs: ServerGuard,
    web: ServerGuard,
    smtp: ServerGuard,
}

impl Cloud {
    fn start(dh: &DockerHost) -> Self {
        let srv = |addr: Ipv4Addr, port| {
            tcp_server(dh.cloud(), addr, port)
                .unwrap_or_else(|e| panic!("server on {addr}:{port}: {e:#}"))
        };
        Cloud {
            imds: srv(addrs::IMDS_V4, 80),
            ecs: srv(addrs::ECS_V4, 80),
            web: srv(addrs::SMTP_V4, 8080),
            smtp: srv(addrs::SMTP_V4, 25),
        }
    }
}

/// A long-running busybox container the probes are `docker exec`ed in.
struct Client {
    name: &'static str,
    /// docker0, or the user-defined network's name.
    label: &'static str,
    bridge: String,
    ip: String,
}

/// Which filter is in place while scenarios run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    EgressFilter,
    Iptables,
}

/// Runs the scenarios, keeping SMTP batches apart by [`SMTP_REFILL`].
struct Prober<'a> {
    dh: &'a DockerHost,
    cloud: &'a Cloud,
    last_smtp: Option<Instant>,
}

impl Prober<'_> {
    /// `timeout 2 wget -q -O- http://ADDR:PORT/` in `client`; the server's
    /// accept count must agree with what the client saw.
    fn http(&self, client: &Client, addr: Ipv4Addr, port: u16, server: &ServerGuard) -> Reach {
        let before = server.accepted();
        let script = format!(
            "timeout {HTTP_TIMEOUT_S} wget -q -O- http://{addr}:{port}/ 2>&1; echo \"exit=$?\""
        );
        let out = self
            .dh
            .docker(&["exec", client.name, "sh", "-c", &script])
            .unwrap_or_else(|e| panic!("probe from {}: {e:#}", client.name));
        let (body, exit) = out.rsplit_once("exit=").unwrap_or((&out, "?"));
        let exit: i32 = exit.trim().parse().unwrap_or(-1);
        let reach = Reach::from_busybox(exit, body).unwrap_or_else(|| {
            panic!(
                "GET http://{addr}:{port}/ from {}: unexpected result {out:?}",
                client.name
            )
        });
        if reach == Reach::Connected {
            assert!(
                body.contains("ok"),
                "unexpected body from {addr}:{port}: {body:?}"
            );
            assert!(
                server.wait_accepted(before + 1, Duration::from_secs(2)),
                "{} says it reached {addr}:{port} but the server accepted nothing",
                client.name
            );
        } else {
            assert_eq!(
                server.accepted(),
                before,
                "{} saw {reach} but {addr}:{port} accepted a connection",
                client.name
            );
        }
        reach
    }

    /// [`SMTP_ATTEMPTS`] `nc -w 1` connections to 198.51.100.25:25 at once;
    /// returns how many connected (checked against the server's count).
    fn smtp(&mut self, client: &Client) -> usize {
        if let Some(last) = self.last_smtp {
            let since = last.elapsed();
            if since < SMTP_REFILL {
                std::thread::sleep(SMTP_REFILL - since);
            }
        }
        let before = self.cloud.smtp.accepted();
        let script = format!(
            "for i in $(seq {SMTP_ATTEMPTS}); do \
               (nc -w 1 {} 25 </dev/null >/dev/null 2>&1 && echo connected || echo failed) & \
             done; wait",
            addrs::SMTP_V4
        );
        let out = self
            .dh
            .docker(&["exec", client.name, "sh", "-c", &script])
            .unwrap_or_else(|e| panic!("SMTP probe from {}: {e:#}", client.name));
        self.last_smtp = Some(Instant::now());
        let connected = out.lines().filter(|l| l.trim() == "connected").count();
        let failed = out.lines().filter(|l| l.trim() == "failed").count();
        assert_eq!(connected + failed, SMTP_ATTEMPTS, "nc output: {out:?}");
        self.cloud
            .smtp
            .wait_accepted(before + connected, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            self.cloud.smtp.accepted() - before,
            connected,
            "{} saw {connected} SMTP connections, the server counted otherwise",
            client.name
        );
        connected
    }

    /// Every scenario from every client; returns (scenario, verdict) in a
    /// fixed order and checks what `mode` must give.
    fn run(&mut self, clients: &[Client], mode: Mode) -> Vec<(String, Verdict)> {
        let mut out = Vec::new();
        for c in clients {
            let on = format!("{} ({} on {})", c.name, c.ip, c.bridge);
            let imds = self.http(c, addrs::IMDS_V4, 80, &self.cloud.imds);
            let ecs = self.http(c, addrs::ECS_V4, 80, &self.cloud.ecs);
            let web = self.http(c, addrs::SMTP_V4, 8080, &self.cloud.web);
            let smtp = self.smtp(c);
            report!(
                "  {mode:?} {on}: metadata {imds}, ECS metadata {ecs}, web {web}, SMTP {smtp}/{SMTP_ATTEMPTS}"
            );
            match mode {
                Mode::EgressFilter => {
                    // The default rules reject, like the seed's REJECT: a
                    // reset, so the client fails at once.
                    assert_eq!(imds, Reach::Refused, "{on}: instance metadata");
                    assert_eq!(ecs, Reach::Refused, "{on}: ECS metadata");
                }
                Mode::Iptables => {
                    assert_eq!(imds, Reach::Refused, "{on}: instance metadata (REJECT)");
                    assert_eq!(
                        ecs,
                        Reach::Connected,
                        "{on}: ECS metadata (not in the seed)"
                    );
                }
            }
            assert_eq!(web, Reach::Connected, "{on}: ordinary destination");
            assert_eq!(smtp, SMTP_BURST, "{on}: SMTP attempts within the burst");
            let net = c.label;
            out.push((
                format!("{net}: GET http://{}/ (instance metadata)", addrs::IMDS_V4),
                Verdict::Single(imds),
            ));
            out.push((
                format!("{net}: GET http://{}/ (ECS task metadata)", addrs::ECS_V4),
                Verdict::Single(ecs),
            ));
            out.push((
                format!("{net}: GET http://{}:8080/ (elsewhere)", addrs::SMTP_V4),
                Verdict::Single(web),
            ));
            out.push((
                format!(
                    "{net}: {SMTP_ATTEMPTS} SMTP connections at once to {}:25",
                    addrs::SMTP_V4
                ),
                Verdict::Attempts {
                    connected: smtp,
                    of: SMTP_ATTEMPTS,
                },
            ));
        }
        out
    }
}

/// Program ids attached with TCX to `iface`'s ingress in `ns`.
fn tcx_ingress_programs(ns: &NetNs, iface: &str) -> Vec<u32> {
    let name = iface.to_owned();
    ns.run_in(move || SchedClassifier::query_tcx(&name, TcAttachType::Ingress))
        .expect("setns")
        .map(|(_, progs)| progs.iter().map(|p| p.id()).collect())
        .unwrap_or_default()
}

/// `docker exec egress-filter egress-loader SUBCOMMAND --json`.
fn loader_json(dh: &DockerHost, subcommand: &str) -> anyhow::Result<Value> {
    let out = dh.docker(&["exec", FILTER, "egress-loader", subcommand, "--json"])?;
    Ok(serde_json::from_str(&out)?)
}

/// Waits until the filter container's loader runs and every bridge in
/// `bridges` is attached; returns that status.
fn wait_filter_ready(dh: &DockerHost, bridges: &[&str]) -> Value {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let last = match loader_json(dh, "status") {
            Ok(st) => {
                let attached = |b: &str| {
                    st["interfaces"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|i| i["name"] == b && i["attached"] == true))
                };
                if st["loader_running"] == true && bridges.iter().all(|b| attached(b)) {
                    return st;
                }
                st.to_string()
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            let logs = dh
                .docker_output(&["logs", FILTER], Duration::from_secs(10))
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            panic!("filter not ready after {READY_TIMEOUT:?}; last status: {last}\nlogs:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `counters --json` as name -> packets.
fn counters(dh: &DockerHost) -> BTreeMap<String, u64> {
    let v = loader_json(dh, "counters").unwrap_or_else(|e| panic!("counters: {e:#}"));
    v["counters"]
        .as_array()
        .unwrap_or_else(|| panic!("no counters in {v}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("?").to_owned(),
                c["packets"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn inspect(dh: &DockerHost, container: &str, format: &str) -> String {
    dh.docker(&["inspect", "--format", format, container])
        .unwrap_or_else(|e| panic!("docker inspect {container}: {e:#}"))
}

/// Starts `name` on `network` (`bridge` is docker0), labelled `label`.
fn start_client(
    dh: &DockerHost,
    name: &'static str,
    network: &str,
    label: &'static str,
    bridge: &str,
) -> Client {
    dh.docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        BUSYBOX_IMAGE,
        "sleep",
        "3600",
    ])
    .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
    let ip = inspect(
        dh,
        name,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    Client {
        name,
        label,
        bridge: bridge.to_owned(),
        ip,
    }
}

/// `docker exec egress-filter egress-loader events --count 1` while `client`
/// tries the metadata address: the events socket works in the shipped image
/// (on its tmpfs, the root being read-only) and reports the drop. The probe
/// repeats because the follower may subscribe after the first SYN's event.
fn event_through_exec(dh: &DockerHost, cloud: &Cloud, client: &Client) -> Value {
    let mut cmd = dh.docker_cmd();
    cmd.args(["exec", FILTER, "egress-loader", "events", "--count", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut follower = egress_tests::ChildGuard::spawn(cmd, "docker exec … events")
        .unwrap_or_else(|e| panic!("docker exec {FILTER} egress-loader events: {e:#}"));
    let events = follower.json_lines();
    let prober = Prober {
        dh,
        cloud,
        last_smtp: None,
    };
    for _ in 0..5 {
        let reach = prober.http(client, addrs::IMDS_V4, 80, &cloud.imds);
        assert_eq!(reach, Reach::Refused, "{}: instance metadata", client.name);
        if let Ok(event) = events.recv_timeout(Duration::from_secs(1)) {
            assert!(
                egress_tests::wait_until(Duration::from_secs(5), || !follower.is_running()),
                "`events --count 1` did not exit after one event"
            );
            return event;
        }
    }
    panic!("no drop event from `docker exec {FILTER} egress-loader events` after 5 probes");
}

#[test]
fn docker_engine_end_to_end() {
    require_privileges!(docker);
    let mut phases = Phases::new();
    let loader = images::image_loader_bin()
        .unwrap_or_else(|e| panic!("a statically linked egress-loader for the image: {e:#}"));
    phases.mark("static egress-loader");

    // Declared first, dropped last: the engine (and the filter container
    // holding a bind mount of it) goes first.
    let bpffs = BpffsMount::new();
    let dh = DockerHost::start("dke2e").unwrap_or_else(|e| panic!("starting Docker: {e:#}"));
    report!(
        "engine: Docker {} in netns {} (state in {}, containers under cgroup {})",
        dh.server_version(),
        dh.host().name(),
        dh.dir().display(),
        dh.cgroup_parent()
    );
    let cloud = Cloud::start(&dh);
    phases.mark("engine started in its namespace");

    images::build_busybox_image(&dh).unwrap_or_else(|e| panic!("busybox image: {e:#}"));
    images::build_filter_image(&dh, &loader, FILTER_IMAGE)
        .unwrap_or_else(|e| panic!("filter image from {}: {e:#}", loader.display()));
    report!(
        "images: {BUSYBOX_IMAGE}, {FILTER_IMAGE} (deploy/Dockerfile + {})",
        loader.display()
    );
    phases.mark("images built (FROM scratch)");

    // The filter, as docs/deployment.md runs it, with a private bpffs in place of
    // the machine's /sys/fs/bpf.
    let smtp_burst = SMTP_BURST.to_string();
    let mut run_args = images::filter_run_args(&dh, bpffs.path());
    run_args.extend(
        [
            FILTER_IMAGE,
            "run",
            "--smtp-rate",
            SMTP_RATE,
            "--smtp-burst",
            &smtp_burst,
        ]
        .map(String::from),
    );
    report!("$ docker {}", run_args.join(" "));
    dh.docker(&run_args)
        .unwrap_or_else(|e| panic!("starting the filter container: {e:#}"));
    wait_filter_ready(&dh, &["docker0"]);
    // `--network host` must mean the engine's namespace, never the machine's.
    let pid: u32 = inspect(&dh, FILTER, "{{.State.Pid}}").parse().expect("pid");
    assert_eq!(
        DockerHost::netns_inode_of(pid).unwrap(),
        dh.host_netns_inode().unwrap(),
        "the filter container is not in the engine's network namespace"
    );
    assert_eq!(tcx_ingress_programs(dh.host(), "docker0").len(), 1);
    let client0 = start_client(&dh, "client-docker0", "bridge", "docker0", "docker0");
    phases.mark("filter container running, docker0 attached");

    let event = event_through_exec(&dh, &cloud, &client0);
    report!("$ docker exec {FILTER} egress-loader events --count 1\n  {event}");
    assert_eq!(event["verdict"], "metadata_blocked", "{event}");
    assert_eq!(event["src"], client0.ip.as_str(), "{event}");
    assert_eq!(event["dst"], addrs::IMDS_V4.to_string(), "{event}");
    // The client's veth program judged it (or docker0's, before the veth
    // was attached): the event names that hook.
    assert!(
        event["interface"] == "docker0" || event["endpoint"]["veth"] == event["interface"],
        "{event}"
    );
    phases.mark("drop event read with docker exec");

    // A network created after the filter started: its bridge must be
    // filtered within a second, before any container uses it.
    let called = Instant::now();
    let id = dh
        .docker(&["network", "create", NETWORK])
        .unwrap_or_else(|e| panic!("docker network create: {e:#}"));
    let returned = called.elapsed();
    let bridge = format!("br-{}", &id[..12]);
    let attached = egress_tests::wait_until(Duration::from_secs(5), || {
        !tcx_ingress_programs(dh.host(), &bridge).is_empty()
    });
    let latency = called.elapsed();
    assert!(
        attached,
        "{bridge} not filtered 5 s after `docker network create`"
    );
    report!(
        "{NETWORK}: bridge {bridge} filtered {} ms after `docker network create` was called \
         (the command itself took {} ms)",
        latency.as_millis(),
        returned.as_millis()
    );
    assert!(
        latency <= NEW_BRIDGE_DEADLINE,
        "{bridge} took {latency:?} to be filtered (limit {NEW_BRIDGE_DEADLINE:?})"
    );
    let client1 = start_client(&dh, "client-e2e-net", NETWORK, NETWORK, &bridge);
    let status = wait_filter_ready(&dh, &["docker0", &bridge]);
    report!("status: {}", status["interfaces"]);
    let clients = [client0, client1];
    phases.mark("user-defined network filtered");

    let mut prober = Prober {
        dh: &dh,
        cloud: &cloud,
        last_smtp: None,
    };
    let filtered = prober.run(&clients, Mode::EgressFilter);
    let after_scenarios = counters(&dh);
    report!("counters after the scenarios: {after_scenarios:?}");
    let pid = inspect(&dh, FILTER, "{{.State.Pid}}");
    let vm = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = vm
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?");
    report!(
        "filter container's loader (pid {pid}): {}",
        rss.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    assert_eq!(
        after_scenarios["smtp_allowed"],
        (SMTP_BURST * clients.len()) as u64,
        "smtp_allowed"
    );
    assert!(
        after_scenarios["smtp_limited"] >= ((SMTP_ATTEMPTS - SMTP_BURST) * clients.len()) as u64
    );
    assert!(after_scenarios["metadata_blocked"] >= 2 * clients.len() as u64);
    phases.mark("scenarios with egress-filter");

    restart_under_probe(&dh, &cloud, &bridge, &after_scenarios);
    phases.mark("kill and restart under a probe");

    // The seed's rules instead: detach the filter (the restart policy would
    // bring it back when `run` exits, so it is turned off first), then
    // insert the three rules at the top of DOCKER-USER.
    dh.docker(&["update", "--restart", "no", FILTER]).unwrap();
    dh.docker(&["exec", FILTER, "egress-loader", "detach"])
        .unwrap_or_else(|e| panic!("egress-loader detach: {e:#}"));
    let stopped = egress_tests::wait_until(Duration::from_secs(10), || {
        inspect(&dh, FILTER, "{{.State.Running}}") == "false"
    });
    if !stopped {
        dh.docker(&["stop", FILTER]).unwrap();
    }
    for iface in ["docker0", bridge.as_str()] {
        assert!(
            tcx_ingress_programs(dh.host(), iface).is_empty(),
            "{iface} still has a program after detach"
        );
    }
    assert!(
        !bpffs.path().join("egress").exists(),
        "pins left after detach"
    );
    let rules: [&[&str]; 3] = [
        &[
            "-I",
            "DOCKER-USER",
            "1",
            "-p",
            "tcp",
            "--syn",
            "-m",
            "multiport",
            "--dports",
            "25,465,587",
            "-m",
            "limit",
            "--limit",
            SMTP_RATE,
            "--limit-burst",
            smtp_burst.as_str(),
            "-j",
            "RETURN",
        ],
        &[
            "-I",
            "DOCKER-USER",
            "2",
            "-p",
            "tcp",
            "--syn",
            "-m",
            "multiport",
            "--dports",
            "25,465,587",
            "-j",
            "DROP",
        ],
        &[
            "-I",
            "DOCKER-USER",
            "3",
            "-d",
            "169.254.169.254",
            "-j",
            "REJECT",
        ],
    ];
    for rule in rules {
        dh.iptables(rule)
            .unwrap_or_else(|e| panic!("iptables {}: {e:#}", rule.join(" ")));
    }
    report!(
        "filter detached and stopped; DOCKER-USER in netns {}:\n{}",
        dh.host().name(),
        dh.iptables(&["-S", "DOCKER-USER"]).unwrap()
    );
    phases.mark("switched to the seed's iptables rules");

    prober.last_smtp = None; // the -m limit rule starts with a full bucket
    let iptables = prober.run(&clients, Mode::Iptables);
    report!(
        "DOCKER-USER counters:\n{}",
        dh.iptables(&["-L", "DOCKER-USER", "-v", "-n", "-x"])
            .unwrap()
    );
    phases.mark("scenarios with iptables");

    let rows: Vec<Row> = iptables
        .into_iter()
        .zip(filtered)
        .map(|((scenario, ipt), (scenario2, ours))| {
            assert_eq!(scenario, scenario2);
            let note = if scenario.contains("(instance metadata)") {
                "REJECT vs drop (the client fails at once vs times out)"
            } else if scenario.contains("(ECS task metadata)") {
                "169.254.170.2 is in the filter's default blocked set, not in the seed's rules"
            } else {
                ""
            };
            Row {
                scenario,
                iptables: ipt,
                filter: ours,
                note,
            }
        })
        .collect();
    report!(
        "\nequivalence (same traffic, same containers, same engine):\n{}",
        render_table(&rows)
    );
    let looser: Vec<&Row> = rows
        .iter()
        .filter(|r| r.comparison() == Comparison::FilterLooser)
        .collect();
    assert!(
        looser.is_empty(),
        "egress-filter let through more than iptables: {looser:?}"
    );
    report!("timings:\n{}", phases.render());
}

/// Kills the filter (SIGKILL through Docker, then its process from outside
/// for the restart policy) while a probe container tries the metadata
/// address every 200 ms; nothing may get through and the counters must
/// continue from `before`.
fn restart_under_probe(
    dh: &DockerHost,
    cloud: &Cloud,
    bridge: &str,
    before: &BTreeMap<String, u64>,
) {
    const PROBE: &str = "imds-probe";
    let accepted_before = cloud.imds.accepted();
    let script = format!(
        "while :; do \
           (if timeout 1 wget -q -O /dev/null http://{}/ 2>/dev/null; \
            then echo THROUGH; else echo blocked; fi) & \
           sleep 0.2; \
         done",
        addrs::IMDS_V4
    );
    dh.docker(&[
        "run",
        "-d",
        "--name",
        PROBE,
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        &script,
    ])
    .unwrap_or_else(|e| panic!("starting {PROBE}: {e:#}"));
    let probing = Instant::now();
    std::thread::sleep(Duration::from_secs(1));

    let killed = Instant::now();
    dh.docker(&["kill", "--signal", "KILL", FILTER]).unwrap();
    assert_eq!(inspect(dh, FILTER, "{{.State.Running}}"), "false");
    // No loader anywhere now; the pinned links keep the program attached.
    for iface in ["docker0", bridge] {
        assert_eq!(
            tcx_ingress_programs(dh.host(), iface).len(),
            1,
            "{iface} lost its program when the loader died"
        );
    }
    std::thread::sleep(Duration::from_secs(1)); // nothing in userspace now
    dh.docker(&["start", FILTER]).unwrap();
    wait_filter_ready(dh, &["docker0", bridge]);
    let down = killed.elapsed();

    // A crash rather than `docker kill`: the restart policy restarts it.
    let restarts: u32 = inspect(dh, FILTER, "{{.RestartCount}}").parse().unwrap();
    let pid: i32 = inspect(dh, FILTER, "{{.State.Pid}}").parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = egress_tests::wait_until(Duration::from_secs(15), || {
        inspect(dh, FILTER, "{{.RestartCount}}")
            .parse::<u32>()
            .unwrap_or(0)
            > restarts
            && inspect(dh, FILTER, "{{.State.Running}}") == "true"
    });
    assert!(
        restarted,
        "the restart policy did not restart the killed filter"
    );
    wait_filter_ready(dh, &["docker0", bridge]);
    std::thread::sleep(Duration::from_secs(1));

    dh.docker(&["kill", PROBE]).unwrap();
    let probed_for = probing.elapsed();
    let log = dh.docker(&["logs", PROBE]).unwrap();
    dh.docker(&["rm", PROBE]).unwrap();
    let through = log.lines().filter(|l| l.trim() == "THROUGH").count();
    let blocked = log.lines().filter(|l| l.trim() == "blocked").count();
    report!(
        "{PROBE}: {blocked} attempts blocked, {through} got through, over {:.1} s; \
         filter SIGKILLed and started again ({:.1} s until attached), then killed from \
         outside and restarted by the engine (restart count {})",
        probed_for.as_secs_f64(),
        down.as_secs_f64(),
        inspect(dh, FILTER, "{{.RestartCount}}")
    );
    assert_eq!(
        through, 0,
        "the metadata address was reached during the restart:\n{log}"
    );
    assert_eq!(
        cloud.imds.accepted(),
        accepted_before,
        "the metadata server accepted a connection"
    );
    let expected = (probed_for.as_secs_f64() / 0.2 * 0.5) as usize;
    assert!(
        blocked >= expected,
        "only {blocked} probe attempts finished in {probed_for:?} (expected at least {expected})"
    );

    let after = counters(dh);
    report!("counters before the kill: {before:?}\ncounters after the restarts: {after:?}");
    for (name, n) in before {
        assert!(
            after[name] >= *n,
            "counter {name} went back from {n} to {}",
            after[name]
        );
    }
    assert!(
        after["metadata_blocked"] > before["metadata_blocked"],
        "metadata_blocked did not count the probe"
    );
    // Adopted, not attached twice.
    for iface in ["docker0", bridge] {
        assert_eq!(tcx_ingress_programs(dh.host(), iface).len(), 1, "{iface}");
    }
}
