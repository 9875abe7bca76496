//! The tunnel program's cost on a VXLAN device's ingress, per inner
//! packet: the container sends 64-byte inner UDP frames wrapped in VXLAN to
//! its bridge's address on the host, the host's vxlan device decapsulates
//! them and routes each inner packet to the sink in the cloud namespace
//! (the same sender and sink as the main comparison's UDP workload). No
//! filter and the tunnel program (a loader that attaches to tunnels only:
//! no bridge, endpoint or cgroup program, so the outer path is the same
//! bare one in both) are interleaved, repetition by repetition, and
//! compared as the main comparison's ratios are. One more run with
//! BPF_ENABLE_STATS gives the program's own ns per inner packet.
//!
//! The vxlan device is made in the bench's host namespace and removed at
//! the end; nothing leaves the namespaces of the run.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use egress_tests::{
    LoaderProcess, addrs,
    frames::{self, IPPROTO_UDP, V4},
};
use serde::Serialize;

use crate::plan::Plan;
use crate::stats::{Estimate, median, paired_ratios};
use crate::workloads;
use crate::world::{SERVER, UDP_PORT, World};

const VXLAN: &str = "vxbench0";
const VXLAN_PORT: u16 = 4789;
const VXLAN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x42, 0x01];
const LOADER_READY: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize)]
pub struct VxlanSample {
    pub rep: u32,
    /// "no-filter" or "tunnel-program".
    pub setup: String,
    /// Inner packets delivered to the sink per second.
    pub pps: f64,
    /// Sender thread and ksoftirqd CPU ns per delivered inner packet.
    pub cpu_ns: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Vxlan {
    pub reps: u32,
    pub run_secs: f64,
    pub samples: Vec<VxlanSample>,
    /// The tunnel program's own ns per run (BPF_ENABLE_STATS), one run.
    pub program_ns: f64,
    /// Inner packets the program counted on the device during that run.
    pub program_packets: u64,
}

pub const NO_FILTER: &str = "no-filter";
pub const TUNNEL_PROGRAM: &str = "tunnel-program";

impl Vxlan {
    fn values(&self, setup: &str, cpu: bool) -> Vec<(u32, f64)> {
        self.samples
            .iter()
            .filter(|s| s.setup == setup)
            .map(|s| (s.rep, if cpu { s.cpu_ns } else { s.pps }))
            .collect()
    }

    /// The tunnel program's ratio to no filter (higher is better): the
    /// inner packet rate (`cpu = false`) or the CPU per inner packet.
    pub fn ratio(&self, cpu: bool) -> Option<Estimate> {
        let r = paired_ratios(
            &self.values(NO_FILTER, cpu),
            &self.values(TUNNEL_PROGRAM, cpu),
            !cpu,
        );
        Estimate::of(&r)
    }

    pub fn median_of(&self, setup: &str, cpu: bool) -> f64 {
        let v: Vec<f64> = self.values(setup, cpu).iter().map(|x| x.1).collect();
        median(&v)
    }
}

/// The VXLAN payload (header, inner Ethernet frame) of a 64-byte inner
/// IPv4/UDP frame from the container to SERVER:UDP_PORT.
fn payload(src: Ipv4Addr) -> Vec<u8> {
    let std::net::IpAddr::V4(dst) = SERVER else {
        unreachable!("SERVER is IPv4")
    };
    let mut ip = V4::new(dst, IPPROTO_UDP);
    ip.src = src;
    // 14 + 20 + 8 + 22 = 64 bytes of inner frame.
    let l4 = frames::udp(40000, UDP_PORT, &[0x42; 22]);
    let mut v = vec![0x08, 0, 0, 0];
    v.extend_from_slice(&(42u32 << 8).to_be_bytes());
    v.extend_from_slice(&VXLAN_MAC);
    v.extend_from_slice(&frames::SRC_MAC);
    v.extend_from_slice(&0x0800u16.to_be_bytes());
    v.extend_from_slice(&ip.header(l4.len()));
    v.extend_from_slice(&l4);
    v
}

fn add_vxlan(world: &World) -> Result<()> {
    let h = world.host();
    let mac = VXLAN_MAC.map(|b| format!("{b:02x}")).join(":");
    let local = addrs::DOCKER0_V4.to_string();
    let port = VXLAN_PORT.to_string();
    h.ip(&[
        "link",
        "add",
        VXLAN,
        "address",
        &mac,
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        &port,
        "local",
        &local,
        "dev",
        addrs::DOCKER0,
        "nolearning",
    ])?;
    h.ip(&["link", "set", VXLAN, "up"])?;
    // The inner source's route is docker0, not the vxlan device.
    for key in ["all", VXLAN] {
        h.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
    }
    Ok(())
}

/// A loader that attaches to tunnels only; returns it and the program id
/// on the vxlan device.
fn tunnel_only_loader(world: &mut World) -> Result<(LoaderProcess, u32)> {
    let pin_dir = world.new_pin_dir()?;
    let args = [
        "--iface",
        "egbench-none",
        "--no-docker-networks",
        "--no-endpoints",
        "--cgroup",
        "none",
        "--no-docker",
        "--detach-on-exit",
    ];
    let mut loader = LoaderProcess::run_in_ns(world.host(), &pin_dir, &args)?;
    let on_vxlan = |v: &serde_json::Value| -> Option<u32> {
        v["interfaces"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == VXLAN && i["attached"] == true && i["role"] == "tunnel")
            .and_then(|i| i["program_id"].as_u64())
            .and_then(|id| u32::try_from(id).ok())
    };
    let status = loader.wait_ready_until(LOADER_READY, |v| on_vxlan(v).is_some())?;
    let id = on_vxlan(&status).context("the vxlan device has no program id")?;
    Ok((loader, id))
}

fn program_stats(id: u32) -> Result<(u64, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info?;
        if info.id() == id {
            return Ok((info.run_time().as_nanos() as u64, info.run_count()));
        }
    }
    bail!("program {id} not found among the loaded programs")
}

pub fn vxlan(world: &mut World, plan: &Plan) -> Result<Vxlan> {
    add_vxlan(world)?;
    let r = measure(world, plan);
    let _ = world.host().ip(&["link", "del", VXLAN]);
    r
}

fn measure(world: &mut World, plan: &Plan) -> Result<Vxlan> {
    let outer = SocketAddr::new(addrs::DOCKER0_V4.into(), VXLAN_PORT);
    let wrapped = payload(world.topo.container(0).ipv4());
    let run = plan.run_main;
    let mut samples = Vec::new();
    for rep in 0..plan.tunnel_reps {
        let order = if rep.is_multiple_of(2) {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            let loader = if on {
                Some(tunnel_only_loader(world)?.0)
            } else {
                None
            };
            let (pps, cpu_ns) = workloads::udp_rate_to(world, run, outer, &wrapped)?;
            if let Some(mut l) = loader {
                l.terminate(Duration::from_secs(10))?;
            }
            samples.push(VxlanSample {
                rep,
                setup: if on { TUNNEL_PROGRAM } else { NO_FILTER }.into(),
                pps,
                cpu_ns,
            });
        }
    }
    // The program's own time, apart: the stats add their own cost to
    // every run, so they stay off during the paired runs.
    let (mut loader, id) = tunnel_only_loader(world)?;
    let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)")?;
    let (t0, c0) = program_stats(id)?;
    let r = workloads::udp_rate_to(world, run, outer, &wrapped);
    let (t1, c1) = program_stats(id)?;
    drop(fd);
    loader.terminate(Duration::from_secs(10))?;
    r?;
    let out = Vxlan {
        reps: plan.tunnel_reps,
        run_secs: run.as_secs_f64(),
        samples,
        program_ns: (t1 - t0) as f64 / (c1 - c0).max(1) as f64,
        program_packets: c1 - c0,
    };
    if out.program_packets == 0 {
        bail!("the tunnel program on {VXLAN} saw no inner packet");
    }
    println!(
        "   vxlan ingress: {:.0} inner pps without the filter, {:.0} with the tunnel program \
         (ratio {}); CPU {:.0} / {:.0} ns per inner packet; the program {:.1} ns per run",
        out.median_of(NO_FILTER, false),
        out.median_of(TUNNEL_PROGRAM, false),
        out.ratio(false)
            .map_or("n/a".into(), |e| format!("{:.3}", e.median)),
        out.median_of(NO_FILTER, true),
        out.median_of(TUNNEL_PROGRAM, true),
        out.program_ns
    );
    Ok(out)
}
