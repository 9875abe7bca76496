//! The configurations under test and how each is switched on and off in the
//! host namespace. Switching off leaves nothing behind (no nft table, no
//! ipset, no tc link), so "no filter" always runs on a bare path.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use egress_tests::LoaderProcess;
use serde::Serialize;

use crate::cidrs::{self, IptablesList};
use crate::world::{World, exec_with_input, path_str};

/// How long the loader gets to attach to docker0.
const LOADER_READY: Duration = Duration::from_secs(15);

/// One configuration. The count is the number of extra blocked CIDRs on top
/// of the defaults (the seed's three rules for iptables, the default policy
/// for the filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "cidrs", rename_all = "kebab-case")]
pub enum Setup {
    NoFilter,
    /// The seed rules, then one `-d CIDR -j DROP` rule per CIDR.
    Iptables(usize),
    /// The seed rules, then one rule matching a hash:net ipset of the CIDRs.
    Ipset(usize),
    /// `egress-loader run` on docker0, the CIDRs appended to the defaults:
    /// as shipped, with the endpoint program on the container's veth.
    Filter(usize),
    /// The same with `--no-endpoints`: the bridge program alone, as before
    /// endpoints (for the run-time comparisons).
    FilterBridgeOnly(usize),
    /// The bridge program alone at the defaults without their port
    /// exceptions (prog_cost::WITHOUT_EXCEPTIONS), for the except_ports
    /// comparison in traffic.
    FilterNoExceptions,
}

impl Setup {
    /// A stable identifier for the JSON output.
    pub fn key(&self) -> String {
        match *self {
            Setup::NoFilter => "no-filter".into(),
            Setup::Iptables(0) => "iptables".into(),
            Setup::Filter(0) => "filter".into(),
            Setup::Iptables(n) => format!("iptables-rules-{n}"),
            Setup::Ipset(n) => format!("ipset-{n}"),
            Setup::Filter(n) => format!("filter-{n}"),
            Setup::FilterBridgeOnly(n) => format!("filter-bridge-only-{n}"),
            Setup::FilterNoExceptions => "filter-bridge-only-no-exceptions".into(),
        }
    }

    pub fn label(&self) -> String {
        match *self {
            Setup::NoFilter => "no filter".into(),
            Setup::Iptables(0) => "iptables (seed rules)".into(),
            Setup::Filter(0) => "egress filter (defaults)".into(),
            Setup::Iptables(n) => format!("iptables, {} rules", thousands(n)),
            Setup::Ipset(n) => format!("ipset, {} CIDRs", thousands(n)),
            Setup::Filter(n) => format!("egress filter, {} CIDRs", thousands(n)),
            Setup::FilterBridgeOnly(n) => {
                format!("egress filter, bridge only, {} CIDRs", thousands(n))
            }
            Setup::FilterNoExceptions => {
                "egress filter, bridge only, defaults without port exceptions".into()
            }
        }
    }

    /// Switches this configuration on in the host namespace.
    pub fn activate(&self, world: &mut World) -> Result<Active> {
        let t0 = Instant::now();
        let kind = match *self {
            Setup::NoFilter => ActiveKind::Nothing,
            Setup::Iptables(n) => iptables_on(world, n, IptablesList::Rules)?,
            Setup::Ipset(n) => iptables_on(world, n, IptablesList::Ipset)?,
            Setup::Filter(n) => filter_on(world, n, true, None)?,
            Setup::FilterBridgeOnly(n) => filter_on(world, n, false, None)?,
            Setup::FilterNoExceptions => filter_on(
                world,
                0,
                false,
                Some(("no-exceptions.toml", crate::prog_cost::WITHOUT_EXCEPTIONS)),
            )?,
        };
        Ok(Active {
            kind,
            setup_time: t0.elapsed(),
        })
    }
}

pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub struct Active {
    kind: ActiveKind,
    /// From "switch on" to "in force" (rules loaded / docker0 attached).
    pub setup_time: Duration,
}

enum ActiveKind {
    Nothing,
    Iptables {
        ipset: bool,
    },
    Filter {
        loader: LoaderProcess,
        program_id: u32,
        /// The endpoint program on the container's veth, when attached.
        endpoint_program_id: Option<u32>,
    },
}

impl Active {
    /// The bridge classifier's program id while the filter is on.
    pub fn program_id(&self) -> Option<u32> {
        match &self.kind {
            ActiveKind::Filter { program_id, .. } => Some(*program_id),
            _ => None,
        }
    }

    /// The endpoint classifier's program id, when it runs on the
    /// container's veth.
    pub fn endpoint_program_id(&self) -> Option<u32> {
        match &self.kind {
            ActiveKind::Filter {
                endpoint_program_id,
                ..
            } => *endpoint_program_id,
            _ => None,
        }
    }

    /// Runs `f` on the loader while the filter is on.
    pub fn with_loader<R>(&self, f: impl FnOnce(&LoaderProcess) -> R) -> Option<R> {
        match &self.kind {
            ActiveKind::Filter { loader, .. } => Some(f(loader)),
            _ => None,
        }
    }

    /// Packets the configuration has seen so far: the filter's counters
    /// summed, or the packets that went through DOCKER-USER's jump.
    pub fn packets_seen(&self, world: &World) -> Result<u64> {
        match &self.kind {
            ActiveKind::Nothing => Ok(0),
            ActiveKind::Filter { loader, .. } => {
                let v = loader.cli_json("counters", &[])?;
                Ok(v["counters"]
                    .as_array()
                    .context("counters --json: no counters array")?
                    .iter()
                    .filter_map(|c| c["packets"].as_u64())
                    .sum())
            }
            ActiveKind::Iptables { .. } => {
                let out = world
                    .host()
                    .exec_stdout(&["iptables", "-w", "-L", "FORWARD", "-v", "-n", "-x"])?;
                Ok(out
                    .lines()
                    .find(|l| l.contains("DOCKER-USER"))
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0))
            }
        }
    }

    /// Switches the configuration off and checks that nothing is left.
    pub fn deactivate(self, world: &World) -> Result<()> {
        match self.kind {
            ActiveKind::Nothing => Ok(()),
            ActiveKind::Iptables { ipset } => {
                let h = world.host();
                h.exec(&["nft", "delete", "table", "ip", "filter"])?;
                if ipset {
                    h.exec(&["ipset", "destroy", cidrs::IPSET_NAME])?;
                }
                let left = h.exec_stdout(&["nft", "list", "ruleset"])?;
                if !left.trim().is_empty() {
                    bail!("nft rules left in the host namespace after removal:\n{left}");
                }
                Ok(())
            }
            ActiveKind::Filter { mut loader, .. } => {
                let pin_dir = loader.pin_dir().to_owned();
                loader
                    .terminate(Duration::from_secs(10))
                    .context("stopping egress-loader")?;
                let links = pin_dir.join("links");
                let left: Vec<_> = std::fs::read_dir(&links)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                if !left.is_empty() {
                    bail!(
                        "--detach-on-exit left links pinned in {}: {left:?}",
                        links.display()
                    );
                }
                Ok(())
            }
        }
    }
}

fn iptables_on(world: &mut World, n: usize, list: IptablesList) -> Result<ActiveKind> {
    let blocked = cidrs::blocked(n);
    let h = world.host();
    let ipset = list == IptablesList::Ipset && n > 0;
    if ipset {
        exec_with_input(h, &["ipset", "restore"], &cidrs::ipset_restore(&blocked))?;
    }
    exec_with_input(
        h,
        &["iptables-restore", "-w", "--noflush"],
        &cidrs::iptables_restore(&blocked, list),
    )?;
    Ok(ActiveKind::Iptables { ipset })
}

fn filter_on(
    world: &mut World,
    n: usize,
    endpoints: bool,
    config: Option<(&str, &str)>,
) -> Result<ActiveKind> {
    let pin_dir = world.new_pin_dir()?;
    let mut args = vec![
        "--iface".to_owned(),
        "docker0".to_owned(),
        "--detach-on-exit".to_owned(),
    ];
    if !endpoints {
        args.push("--no-endpoints".into());
    }
    if let Some((name, text)) = config {
        let path = world.scratch_file(name, text)?;
        args.push("--config".into());
        args.push(path_str(&path));
    } else if n > 0 {
        let path = world.scratch_file(
            &format!("filter-{n}.toml"),
            &cidrs::filter_config(&cidrs::blocked(n)),
        )?;
        args.push("--config".into());
        args.push(path_str(&path));
    }
    let mut loader = LoaderProcess::run_in_ns(world.host(), &pin_dir, &args)?;
    // With endpoints, in force once the container's veth runs its program
    // too (until then the bridge judges its packets).
    let veth = world.topo.container(0).host_veth().to_owned();
    let status = loader.wait_ready_until(LOADER_READY, |v| {
        docker0(v).is_some() && (!endpoints || endpoint(v, &veth).is_some())
    })?;
    let program_id = docker0(&status).context("docker0 has no program id")?;
    let endpoint_program_id = endpoint(&status, &veth);
    Ok(ActiveKind::Filter {
        loader,
        program_id,
        endpoint_program_id,
    })
}

/// The program id on `veth` if `status --json` says it is attached as an
/// endpoint.
fn endpoint(status: &serde_json::Value, veth: &str) -> Option<u32> {
    status["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == veth && i["attached"] == true && i["role"] == "endpoint")
        .and_then(|i| i["program_id"].as_u64())
        .and_then(|id| u32::try_from(id).ok())
}

/// The program id on docker0 if `status --json` says it is attached.
fn docker0(status: &serde_json::Value) -> Option<u32> {
    status["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == "docker0" && i["attached"] == true)
        .and_then(|i| i["program_id"].as_u64())
        .and_then(|id| u32::try_from(id).ok())
}
