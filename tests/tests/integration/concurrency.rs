//! SYN floods from both CPUs at once against the shared GCRA bucket: the
//! number admitted stays inside the token-bucket contract, and the bounded
//! per-source table cannot be used to get fresh buckets.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use egress_ebpf_common::counters::CounterId::*;
use egress_tests::{
    frames::*,
    require_privileges,
    test_run::{Classifier, DROP, PASS},
};

const SMTP_HOST: [u8; 4] = [198, 51, 100, 25];
static FLOODS: std::sync::Mutex<()> = std::sync::Mutex::new(());
const RATE_PER_SEC: f64 = 1000.0;
/// 200 ms worth of tokens: on a shared 2-core machine a flooding thread can
/// be descheduled for a while, and a gap longer than the burst window
/// discards refill (the bucket is full), which would make the lower bound
/// unprovable. A race that double-admits would still show: two CPUs at
/// 1000/s each would exceed the upper bound by far.
const BURST: u64 = 200;

fn pin_to_cpu(cpu: usize) {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
}

fn syn_from(src: Ipv4Addr) -> Vec<u8> {
    let mut ip = V4::new(Ipv4Addr::from(SMTP_HOST), IPPROTO_TCP);
    ip.src = src;
    v4_frame(&ip, &tcp(40000, 25, SYN))
}

/// Floods from every CPU for `duration`; returns (admitted, attempts, elapsed).
fn flood(scope: &str, duration: Duration) -> Option<(u64, u64, f64)> {
    let c = Classifier::with_policy(&format!(
        "[smtp]\nrate = \"{RATE_PER_SEC}/second\"\nburst = {BURST}\nscope = \"{scope}\"\n"
    ));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cpus < 2 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "concurrency tests need 2 CPUs"
        );
        eprintln!("SKIP concurrency: one CPU, nothing runs at once");
        return None;
    }
    // One flood at a time: two at once would put four spinning threads on
    // two CPUs and measure the scheduler instead of the bucket.
    let _serial = FLOODS.lock().unwrap_or_else(|e| e.into_inner());
    let frame = syn_from(Ipv4Addr::new(172, 17, 0, 2));
    // Load both program instances before the clock starts.
    let instances: Vec<Classifier> = (0..2).map(|_| Classifier::sharing(&c)).collect();
    let ready = std::sync::Barrier::new(3);
    let mut start = Instant::now();
    std::thread::scope(|s| {
        for (cpu, mut mine) in instances.into_iter().enumerate() {
            let frame = frame.clone();
            let ready = &ready;
            s.spawn(move || {
                pin_to_cpu(cpu);
                ready.wait();
                let begin = Instant::now();
                while begin.elapsed() < duration {
                    mine.run_repeat(&frame, 2000);
                }
            });
        }
        // Taken before the threads are released, so `t` covers the whole flood.
        start = Instant::now();
        ready.wait();
    });
    let elapsed = start.elapsed().as_secs_f64();
    let snap = c.counters();
    let admitted = snap.get(SmtpAllowed).packets;
    Some((admitted, admitted + snap.get(SmtpLimited).packets, elapsed))
}

fn check_contract(scope: &str) {
    let Some((admitted, attempts, t)) = flood(scope, Duration::from_millis(600)) else {
        return;
    };
    let upper = BURST as f64 + RATE_PER_SEC * t;
    // The flood runs from (just after) the first measurement to (just before)
    // the last; the bucket refills at RATE the whole time and starts full.
    let lower = RATE_PER_SEC * t - 1.0;
    println!(
        "{scope}: {attempts} attempts from 2 CPUs in {t:.3} s: admitted {admitted} (contract: {lower:.1} ..= {upper:.1})"
    );
    assert!(
        attempts > 100 * admitted,
        "the flood must exceed the rate by far ({attempts} attempts)"
    );
    assert!(
        admitted as f64 <= upper,
        "admitted {admitted} > burst {BURST} + rate * {t:.3} s = {upper:.1}"
    );
    assert!(
        admitted as f64 >= lower,
        "admitted {admitted} < rate * {t:.3} s - 1 = {lower:.1}: traffic within the rate was refused"
    );
}

#[test]
fn global_bucket_holds_under_a_two_cpu_flood() {
    require_privileges!();
    check_contract("global");
}

#[test]
fn per_source_bucket_holds_under_a_two_cpu_flood() {
    require_privileges!();
    check_contract("per-source");
}

#[test]
fn filling_the_per_source_table_gives_no_fresh_buckets() {
    require_privileges!();
    let capacity = egress_ebpf_common::maps::SMTP_SOURCE_CAPACITY;
    let mut c =
        Classifier::with_policy("[smtp]\nrate = \"1/hour\"\nburst = 2\nscope = \"per-source\"\n");
    // The victim-attacker spends its burst first.
    let first = syn_from(Ipv4Addr::new(172, 17, 0, 2));
    assert_eq!(c.run(&first), PASS);
    assert_eq!(c.run(&first), PASS);
    assert_eq!(c.run(&first), DROP, "burst 2 spent");
    // Then it spoofs enough sources to fill the table to capacity.
    // One slot is the victim's own bucket.
    for i in 0..capacity - 1 {
        let src = Ipv4Addr::from(0x0a00_0000u32 + i);
        c.run(&syn_from(src));
    }
    // Its own bucket was not evicted: still empty.
    assert_eq!(c.run(&first), DROP, "a full table must not reset a bucket");
    // New sources now share one overflow bucket: 200 of them get `burst` in all.
    let before = c.counters().get(SmtpAllowed).packets;
    for i in 0..200u32 {
        c.run(&syn_from(Ipv4Addr::from(0x0b00_0000u32 + i)));
    }
    let admitted = c.counters().get(SmtpAllowed).packets - before;
    println!("after filling {capacity} buckets, 200 new sources got {admitted} admissions");
    assert_eq!(
        admitted, 2,
        "new sources beyond capacity share one bucket of burst 2"
    );
}
