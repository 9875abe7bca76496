//! The loader's footprint: resident memory of `egress-loader run` idle and
//! while bridges named `br-*` appear (it rescans every second and attaches
//! to each), and the kernel memory of its maps and program.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use egress_ebpf_common::maps as names;
use serde::Serialize;

use crate::cidrs;
use crate::plan::Plan;
use crate::world::{World, exec_with_input, path_str, rss_kib};

/// How long the loader may take to attach to every new bridge.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct MapMemory {
    pub name: &'static str,
    pub kind: String,
    pub max_entries: u64,
    pub bytes_memlock: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MapsFootprint {
    pub cidrs: usize,
    pub maps: Vec<MapMemory>,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    /// VmRSS of `run` with the default policy on docker0, idle.
    pub idle_rss_kib: u64,
    pub bridges: usize,
    /// Seconds from creating the bridges to all of them attached.
    pub attach_all_secs: f64,
    /// Highest VmRSS sampled (every 50 ms) while the bridges appeared.
    pub busy_peak_rss_kib: u64,
    /// VmHWM (the kernel's own peak) after attaching to every bridge.
    pub hwm_kib: u64,
    /// VmRSS once attached to every bridge and idle again.
    pub attached_rss_kib: u64,
    /// VmRSS after the bridges are gone again.
    pub after_rss_kib: u64,
    /// VmRSS idle with the largest blocked list.
    pub large_policy_cidrs: usize,
    pub large_policy_rss_kib: u64,
    pub maps_default: MapsFootprint,
    pub maps_large: MapsFootprint,
    pub program: serde_json::Value,
}

pub fn measure(world: &mut World, plan: &Plan) -> Result<Footprint> {
    // Default policy, following docker0 and br-*.
    let mut loader = world.start_loader(&["--iface", "br-*"])?;
    let status = loader.wait_ready_until(Duration::from_secs(15), |v| attached(v) >= 1)?;
    let program_id = status["interfaces"][0]["program_id"].as_u64().unwrap_or(0);
    std::thread::sleep(plan.idle);
    let pid = loader.pid();
    let (idle_rss_kib, _) = rss_kib(pid)?;
    println!("   idle: VmRSS {idle_rss_kib} KiB");
    let maps_default = maps(loader.pin_dir(), 0)?;
    let program = world
        .host()
        .exec_stdout(&[
            "bpftool",
            "-j",
            "prog",
            "show",
            "id",
            &program_id.to_string(),
        ])
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);

    let names: Vec<String> = (0..plan.bridges)
        .map(|i| format!("br-bench{i:02}"))
        .collect();
    let mut batch = String::new();
    for n in &names {
        batch.push_str(&format!("link add {n} type bridge\nlink set {n} up\n"));
    }
    let t0 = Instant::now();
    exec_with_input(world.host(), &["ip", "-batch", "-"], &batch)?;
    let mut peak = 0;
    let mut last_check = Instant::now() - Duration::from_secs(1);
    let want = plan.bridges + 1;
    let attach_all_secs = loop {
        peak = peak.max(rss_kib(pid)?.0);
        if last_check.elapsed() >= Duration::from_millis(250) {
            last_check = Instant::now();
            let v = loader.cli_json("status", &[])?;
            if attached(&v) >= want {
                break t0.elapsed().as_secs_f64();
            }
        }
        anyhow::ensure!(
            t0.elapsed() < ATTACH_TIMEOUT,
            "the loader did not attach to {} bridges within {ATTACH_TIMEOUT:?}; log:\n{}",
            plan.bridges,
            loader.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(plan.idle);
    let (attached_rss_kib, hwm_kib) = rss_kib(pid)?;
    peak = peak.max(attached_rss_kib);
    println!(
        "   {} bridges attached in {attach_all_secs:.1} s: peak VmRSS {peak} KiB, VmHWM {hwm_kib} KiB",
        plan.bridges
    );
    let mut batch = String::new();
    for n in &names {
        batch.push_str(&format!("link del {n}\n"));
    }
    exec_with_input(world.host(), &["ip", "-batch", "-"], &batch)?;
    std::thread::sleep(plan.idle);
    let (after_rss_kib, _) = rss_kib(pid)?;
    loader
        .terminate(Duration::from_secs(10))
        .context("stopping egress-loader")?;

    // The largest blocked list, docker0 only.
    let n = plan.max_size();
    let config = world.scratch_file("footprint.toml", &cidrs::filter_config(&cidrs::blocked(n)))?;
    let mut loader = world.start_loader(&["--config", &path_str(&config)])?;
    loader.wait_ready_until(Duration::from_secs(15), |v| attached(v) >= 1)?;
    std::thread::sleep(plan.idle);
    let (large_policy_rss_kib, _) = rss_kib(loader.pid())?;
    println!("   {n} CIDRs, idle: VmRSS {large_policy_rss_kib} KiB");
    let maps_large = maps(loader.pin_dir(), n)?;
    loader
        .terminate(Duration::from_secs(10))
        .context("stopping egress-loader")?;

    Ok(Footprint {
        idle_rss_kib,
        bridges: plan.bridges,
        attach_all_secs,
        busy_peak_rss_kib: peak,
        hwm_kib,
        attached_rss_kib,
        after_rss_kib,
        large_policy_cidrs: n,
        large_policy_rss_kib,
        maps_default,
        maps_large,
        program,
    })
}

/// Interfaces that `status --json` reports as attached.
fn attached(status: &serde_json::Value) -> usize {
    status["interfaces"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|i| i["attached"] == true).count())
}

/// `bpftool map show pinned` for every map the classifier pins.
fn maps(pin_dir: &std::path::Path, cidrs: usize) -> Result<MapsFootprint> {
    let pins = egress_loader::kernel::pins::PinDir::new(pin_dir);
    let mut maps = Vec::new();
    for name in names::ALL {
        let path = path_str(&pins.map(name));
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "show", "pinned", &path])
            .output()
            .context("running bpftool")?;
        anyhow::ensure!(
            out.status.success(),
            "bpftool map show pinned {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        maps.push(MapMemory {
            name,
            kind: v["type"].as_str().unwrap_or("?").to_owned(),
            max_entries: v["max_entries"].as_u64().unwrap_or(0),
            bytes_memlock: v["bytes_memlock"].as_u64().unwrap_or(0),
        });
    }
    let total_bytes = maps.iter().map(|m| m.bytes_memlock).sum();
    Ok(MapsFootprint {
        cidrs,
        maps,
        total_bytes,
    })
}
