//! The narrated walk-through behind `cargo xtask demo`
//! (`cargo test -p egress-tests --test demo -- --nocapture`): the filter at
//! work in a throwaway sandbox of network namespaces, for a newcomer. It is
//! also a real test: every outcome it narrates is asserted.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use egress_tests::loader::describe_output;
use egress_tests::topology::Topology;
use egress_tests::traffic::{tcp_connect, tcp_server};
use egress_tests::{BpffsMount, LoaderProcess, addrs, require_privileges, wait_until};

fn step(n: u32, title: &str, explanation: &str) {
    println!("\n=== {n}. {title} ===");
    for line in explanation.lines() {
        println!("   {line}");
    }
}

fn show(label: &str, text: &str) {
    println!("   $ {label}");
    for line in text.trim_end().lines() {
        println!("   | {line}");
    }
}

/// Runs `egress-loader SUBCOMMAND --pin-dir DIR` and prints what it printed.
fn show_cli(loader: &LoaderProcess, subcommand: &str) -> String {
    let out = loader.cli(subcommand, &[] as &[&str]).unwrap();
    assert!(
        out.status.success(),
        "egress-loader {subcommand}: {}",
        describe_output(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    show(
        &format!(
            "egress-loader {subcommand} --pin-dir {}",
            loader.pin_dir().display()
        ),
        &text,
    );
    text
}

#[test]
fn demo() {
    require_privileges!();

    step(
        1,
        "Build a sandbox that looks like a Docker host",
        "Network namespaces only; nothing touches this machine's own network.\n\
         host ns:   docker0 172.17.0.1/16 (the Docker bridge), routing to the cloud\n\
         container: 172.17.0.2 on a veth into docker0 (a second one at .3)\n\
         cloud ns:  169.254.169.254 (instance metadata, hands out credentials),\n\
         \x20          198.51.100.25 (an ordinary internet host: web on 8080, mail on 25)",
    );
    let topo = Topology::docker_like("demo").expect("building the sandbox");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    let imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let mail = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    println!(
        "   namespaces: {}\n   private bpffs for the filter's pins: {}",
        topo.namespace_names().join(", "),
        bpffs.path().display()
    );

    step(
        2,
        "Without the filter, a container reads the metadata service",
        "This is the problem: any code in any container can fetch the host's\n\
         cloud credentials from 169.254.169.254.",
    );
    let body = assert_http_ok(c0, addrs::IMDS_V4, 80);
    println!(
        "   GET http://169.254.169.254/ from the container -> 200 OK, body {:?}",
        body.trim()
    );
    assert_eq!(imds.accepted(), 1);

    step(
        3,
        "Start the loader",
        "It loads the eBPF classifier, writes the policy into its maps, attaches\n\
         it to the ingress hook of docker0 (where containers' packets enter the\n\
         host) and pins everything, so protection outlives the loader.\n\
         --smtp-burst 3: at most 3 SMTP connection attempts at once, then 5/minute.",
    );
    let mut loader = start_loader(&topo, &bpffs, &["--smtp-burst", "3"]);
    println!(
        "   $ egress-loader run --pin-dir {} --rescan {RESCAN} --smtp-burst 3   (in the host ns)",
        loader.pin_dir().display()
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    println!("   docker0 is attached. What the kernel enforces now, read back from the pins:");
    let status = show_cli(&loader, "status");
    assert!(status.contains("docker0"), "{status}");
    assert!(status.contains("169.254.169.254/32"), "{status}");

    step(
        4,
        "Metadata is blocked, everything else still works",
        "Connections to a blocked destination are rejected, like the seed's\n\
         -j REJECT: the filter answers with a TCP reset, so the client fails\n\
         at once instead of waiting out its timeout.",
    );
    let took = assert_http_refused(c0, addrs::IMDS_V4, 80);
    println!(
        "   GET http://169.254.169.254/      -> connection refused after {:.1} ms (rejected by the filter)",
        took.as_secs_f64() * 1000.0
    );
    assert_http_ok(c0, addrs::SMTP_V4, 8080);
    println!("   GET http://198.51.100.25:8080/   -> 200 OK (untouched)");
    assert_eq!(web.accepted(), 1);
    assert_eq!(
        imds.accepted(),
        1,
        "the metadata server saw a new connection"
    );

    step(
        5,
        "SMTP: a burst of 3 connection attempts, then the rate limit",
        "Five quick connection attempts to port 25: the first 3 fit the burst,\n\
         the next 2 are dropped (a new token comes every 12 s at 5/minute).",
    );
    let dest = SocketAddr::new(addrs::SMTP_V4.into(), 25);
    let mut admitted = 0;
    for i in 1..=5 {
        match tcp_connect(c0, dest, DROPPED) {
            Ok(()) => {
                admitted += 1;
                println!("   attempt {i}: connected");
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "attempt {i}: {e}");
                println!("   attempt {i}: timed out (rate-limited)");
            }
        }
    }
    assert_eq!(admitted, 3, "attempts admitted out of 5");
    assert!(mail.wait_accepted(3, REACHABLE));
    assert_eq!(mail.accepted(), 3);

    step(
        6,
        "The counters",
        "Per-CPU counters in pinned maps, read by any process (no daemon),\n\
         like `iptables -L -v`.",
    );
    let table = show_cli(&loader, "counters");
    assert!(table.contains("metadata_blocked"), "{table}");
    let c = counters(&loader);
    assert!(packets(&c, "metadata_blocked") >= 1, "{c}");
    assert_eq!(packets(&c, "smtp_allowed"), 3, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 2, "{c}");
    assert!(packets(&c, "passed") > 0, "{c}");

    step(
        7,
        "Detach",
        "`detach` removes the link and every pin; the running loader notices\n\
         and exits by itself, and the metadata service is reachable again.",
    );
    let out = loader.cli("detach", &[] as &[&str]).unwrap();
    assert!(out.status.success(), "detach: {}", describe_output(&out));
    show(
        &format!(
            "egress-loader detach --pin-dir {}",
            loader.pin_dir().display()
        ),
        &String::from_utf8_lossy(&out.stdout),
    );
    assert!(
        wait_until(Duration::from_secs(3), || !loader.is_running()),
        "the loader did not exit after detach:\n{}",
        loader.log()
    );
    println!("   the loader exited");
    assert!(!loader.pin_dir().exists());
    assert_http_ok(c0, addrs::IMDS_V4, 80);
    println!("   GET http://169.254.169.254/      -> 200 OK again");

    step(
        8,
        "Clean up",
        "Dropping the sandbox deletes every namespace (and with them every\n\
         veth and bridge) and unmounts the private bpffs.",
    );
    drop((imds, web, mail));
    drop(loader);
    drop(bpffs);
    drop(topo);
    println!("   done.");
}
