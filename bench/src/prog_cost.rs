//! The classifier's own cost per packet: BPF_PROG_TEST_RUN with a repeat
//! count on representative frames, minus the same measurement of the empty
//! classifier (`egress_noop`) from the same object, which leaves out the
//! test_run loop and the program call itself.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::{
    EbpfLoader,
    programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions},
};
use egress_ebpf_common::maps::NOOP_PROGRAM;
use egress_tests::{
    BpffsMount, NetNs, addrs,
    frames::{self, ACK, IPPROTO_UDP, SYN, V4},
    test_run::{Classifier, DROP, PASS},
};
use serde::Serialize;

use crate::cidrs;
use crate::plan::Plan;
use crate::stats::median;

#[derive(Debug, Clone, Serialize)]
pub struct FrameCost {
    pub frame: String,
    pub verdict: String,
    /// Mean ns per run of the classifier (median over rounds).
    pub filter_ns: f64,
    /// Mean ns per run of the empty classifier (median over rounds).
    pub noop_ns: f64,
    /// The difference: the program's own cost.
    pub program_ns: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyCost {
    /// Extra blocked CIDRs on top of the default policy.
    pub cidrs: usize,
    /// The default policy's port exceptions (DNS on 169.254.169.254) left
    /// out: the same rules without `except_ports`, to show what the
    /// exception check costs.
    #[serde(default)]
    pub without_exceptions: bool,
    pub frames: Vec<FrameCost>,
}

/// The frames, for a policy whose largest list has `max` CIDRs.
fn representative_frames(max: usize) -> Vec<(String, Vec<u8>)> {
    let server = addrs::SMTP_V4.octets();
    // The /24 right after the last blocked one: a lookup that walks as deep
    // into the trie as a miss can.
    let next = cidrs::blocked(max + 1).pop().unwrap_or_default();
    let near: Ipv4Addr = next
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .map_or(Ipv4Addr::new(100, 127, 0, 1), |a: Ipv4Addr| {
            Ipv4Addr::from(u32::from(a) + 1)
        });
    vec![
        (
            "pass: UDP, 64 bytes, to 198.51.100.25".into(),
            frames::v4_frame(
                &V4::new(addrs::SMTP_V4, IPPROTO_UDP),
                &frames::udp(40000, 9000, &[0; 18]),
            ),
        ),
        (
            "pass: TCP ACK to 198.51.100.25:443".into(),
            frames::v4_tcp(server, 443, ACK),
        ),
        (
            "pass: IPv6 TCP ACK to [2001:db8:25::25]:443".into(),
            frames::v6_tcp("2001:db8:25::25", 443, ACK),
        ),
        (
            "blocked: TCP SYN to 169.254.169.254:80 (metadata; not addressed to the bridge's MAC, so no reply)".into(),
            frames::v4_tcp(addrs::IMDS_V4.octets(), 80, SYN),
        ),
        // No row for a reject that is answered: BPF_PROG_TEST_RUN repeats
        // the program on the same buffer, so from the second run on it
        // would judge the reply it wrote (a reset, which passes).
        (
            "pass: UDP to 169.254.169.254:53 (the DNS exception)".into(),
            frames::v4_frame(
                &V4::new(addrs::IMDS_V4, IPPROTO_UDP),
                &frames::udp(40000, 53, &[0; 18]),
            ),
        ),
        (
            "SMTP SYN to 198.51.100.25:25 (bucket CAS; over the rate after 5)".into(),
            frames::v4_tcp(server, 25, SYN),
        ),
        (
            format!("pass: TCP ACK to {near}:443 (near miss: next to the last of {max} CIDRs)"),
            frames::v4_tcp(near.octets(), 443, ACK),
        ),
        (
            "TCP SYN to 100.64.5.1:443 (inside a scaling CIDR)".into(),
            frames::v4_tcp(Ipv4Addr::new(100, 64, 5, 1).octets(), 443, SYN),
        ),
    ]
}

/// The empty classifier, loaded from the same object on its own bpffs
/// (loading the object pins its maps by name under the given directory).
pub struct Noop {
    ebpf: aya::Ebpf,
    _mount: BpffsMount,
}

/// The loader's eBPF object, its maps pinned in a bpffs mount of its own
/// (so that nothing of a running filter is shared), for one of its empty
/// programs.
pub fn object() -> Result<(aya::Ebpf, BpffsMount)> {
    let mount = BpffsMount::try_new()?;
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(mount.path())
        .load(egress_loader::kernel::object::OBJECT)
        .context("loading the eBPF object")?;
    Ok((ebpf, mount))
}

impl Noop {
    pub fn load() -> Result<Self> {
        let (mut ebpf, mount) = object()?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(NOOP_PROGRAM)
            .with_context(|| format!("no program {NOOP_PROGRAM} in the object"))?
            .try_into()?;
        prog.load().context("loading egress_noop")?;
        Ok(Self {
            ebpf,
            _mount: mount,
        })
    }

    /// Attaches the empty classifier to `ifname`'s tc ingress inside `ns`
    /// (TCX); it stays attached until this value is dropped. Returns the
    /// program id.
    pub fn attach(&mut self, ns: &NetNs, ifname: &str) -> Result<u32> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(NOOP_PROGRAM)
            .context("egress_noop")?
            .try_into()?;
        ns.run_in(|| prog.attach(ifname, TcAttachType::Ingress))?
            .with_context(|| format!("attaching egress_noop to {ifname}"))?;
        Ok(prog.info()?.id())
    }

    pub fn run(&mut self, frame: &[u8], repeat: u32) -> Result<u64> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(NOOP_PROGRAM)
            .context("egress_noop")?
            .try_into()?;
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok(r.duration.as_nanos() as u64)
    }
}

fn verdict_name(v: u32) -> String {
    match v {
        PASS => "PASS".into(),
        DROP => "DROP".into(),
        other => other.to_string(),
    }
}

/// The default policy with its port exceptions left out: the built-in
/// `metadata` rule replaced by the same CIDR and action without
/// `except_ports`.
pub const WITHOUT_EXCEPTIONS: &str = "[[unblock]]\nname = \"metadata\"\n\n\
    [[block]]\ncidr = \"169.254.169.254/32\"\naction = \"reject\"\n";

/// Measures every representative frame at the default policy, at the
/// default policy without its port exceptions, and with `plan.max_size()`
/// extra CIDRs. The policies run interleaved, round by round, so that the
/// machine's drift is shared by all of them.
pub fn measure(plan: &Plan) -> Result<Vec<PolicyCost>> {
    let mut noop = Noop::load()?;
    let policies: Vec<(usize, bool, String)> = vec![
        (0, false, String::new()),
        (0, true, WITHOUT_EXCEPTIONS.to_string()),
        (
            plan.max_size(),
            false,
            cidrs::filter_config(&cidrs::blocked(plan.max_size())),
        ),
    ];
    let frames = representative_frames(plan.max_size());
    let mut filters: Vec<Classifier> = policies
        .iter()
        .map(|(_, _, p)| Classifier::with_policy(p))
        .collect();
    let k = frames.len();
    let mut f_ns = vec![vec![Vec::new(); k]; policies.len()];
    let mut n_ns = vec![vec![Vec::new(); k]; policies.len()];
    let mut verdicts = vec![vec![String::new(); k]; policies.len()];
    for _ in 0..plan.test_run_rounds {
        for (j, filter) in filters.iter_mut().enumerate() {
            for (i, (_, frame)) in frames.iter().enumerate() {
                let (v, ns) = filter.run_repeat(frame, plan.test_run_repeat);
                verdicts[j][i] = verdict_name(v);
                f_ns[j][i].push(ns as f64);
                n_ns[j][i].push(noop.run(frame, plan.test_run_repeat)? as f64);
            }
        }
    }
    let mut out = Vec::new();
    for (j, (n, without, _)) in policies.iter().enumerate() {
        let costs = frames
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let (f, z) = (median(&f_ns[j][i]), median(&n_ns[j][i]));
                FrameCost {
                    frame: name.clone(),
                    verdict: verdicts[j][i].clone(),
                    filter_ns: f,
                    noop_ns: z,
                    program_ns: (f - z).max(0.0),
                }
            })
            .collect();
        out.push(PolicyCost {
            cidrs: *n,
            without_exceptions: *without,
            frames: costs,
        });
    }
    Ok(out)
}
