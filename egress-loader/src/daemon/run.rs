//! `run`: load, apply the policy, attach to every matching interface, follow
//! interfaces as they come and go, and leave everything pinned on exit (or
//! remove it with `--detach-on-exit`).
//!
//! `run` reads as its phases, in order, each taking what the previous one
//! produced: `check_host` (refusals, before anything in the kernel
//! changes), `load` (the object, the cgroup programs), `apply` (the policy
//! into the maps), `attach` (the filter in force), then `wake::observe`
//! (what wakes the loop), the loop, and `Daemon::shutdown`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::util::KernelVersion;
use log::{info, warn};
use tokio::{net::TcpListener, sync::mpsc};

use crate::{
    daemon::{
        cgroups::CgroupHooks,
        endpoints::Endpoints,
        filter::{Filter, Parts},
        record::ConfigTracker,
        wake::{self, InForce, Options},
    },
    endpoint::{
        cgroup::{find_host_tree, missing_required},
        engine::{DockerEndpoint, DockerIdentity},
        networks::NetworkWatch,
    },
    error::Error,
    kernel::{
        attach::AttachMode,
        layout::{self, Prepared},
        maps::PolicyMaps,
        object,
        pins::{LAYOUT_VERSION, PinDir},
        system::{self, PinDirLock},
    },
    observe::{config_record::ConfigRecord, kernel_log, metrics},
    policy::{Overrides, Policy, apply::ApplyReport, check},
};

pub struct RunOptions {
    pub policy: Policy,
    /// Re-read on SIGHUP, and when it changes unless `watch_config` is off.
    /// Absolute.
    pub config_path: Option<PathBuf>,
    /// SHA-256 of the bytes `policy` was built from (with `config_path`).
    pub config_sha256: Option<String>,
    /// Follow `config_path`: a change on disk is applied like SIGHUP.
    pub watch_config: bool,
    /// Where the record of the configuration in force is written for
    /// `status`; `None`: nowhere.
    pub state_file: Option<PathBuf>,
    pub overrides: Overrides,
    pub pins: PinDir,
    pub mode: AttachMode,
    pub detach_on_exit: bool,
    /// How often interfaces are re-listed.
    pub rescan: Duration,
    /// Where `egress-loader events` clients connect; `None`: stdout only.
    pub events_socket: Option<PathBuf>,
    /// The Docker engine that names the container behind a source address
    /// in drop events; `None`: addresses only.
    pub docker: Option<DockerEndpoint>,
    /// Where `/metrics` is served; `None`: no metrics server.
    pub metrics_addr: Option<SocketAddr>,
}

/// Runs until SIGINT/SIGTERM or until the pins are removed. Refuses a
/// kernel below the floor, missing capabilities or no bpffs (exit 4), and a
/// `kubepods` cgroup entry with no kubepods cgroup (exit 1), before anything
/// in the kernel changes.
pub async fn run(opts: RunOptions) -> Result<(), Error> {
    // Holds the pin directory's lock until `run` returns.
    let host = check_host(&opts).await?;
    let loaded = load(&opts)?;
    let applied = apply(&opts, &loaded)?;
    let in_force = attach(opts, loaded, applied)?;
    let mut daemon = wake::observe(in_force, host.metrics)?;
    let end = loop {
        let wake = daemon.next_wake().await?;
        if let Some(end) = daemon.handle(wake).await {
            break end;
        }
    };
    daemon.shutdown(end)
}

/// What `check_host` leaves for the run.
struct Host {
    /// Held until `run` returns.
    _lock: PinDirLock,
    /// `/metrics`' port, bound before anything in the kernel changes.
    metrics: Option<TcpListener>,
}

/// The refusals: the kernel floor, privileges, a required cgroup, bpffs,
/// the pin directory's lock, the metrics port. Nothing in the kernel has
/// changed when one is returned.
async fn check_host(opts: &RunOptions) -> Result<Host, Error> {
    match KernelVersion::current() {
        Ok(v) => {
            system::check_kernel(v)?;
            if v < system::TCX_SINCE {
                info!("Linux {v}: {}", system::WITHOUT_TCX);
            }
        }
        // Without a version, let the kernel's own refusals speak.
        Err(e) => warn!("cannot read the kernel version ({e}); not checking the floor"),
    }
    system::check_privileges()?;
    // `kubepods` names a cgroup that exists on every node: its absence is a
    // mistake (the node's tree not mounted), refused before anything changes.
    if let Some(e) = missing_required(&opts.policy.cgroups, &find_host_tree()) {
        return Err(Error::Cgroup(e));
    }
    system::ensure_bpffs(opts.pins.root())?;
    std::fs::create_dir_all(opts.pins.root())?;
    let lock = PinDirLock::acquire(opts.pins.root())?;
    // Before anything in the kernel changes: a busy port refuses the start.
    let metrics = match opts.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    Ok(Host {
        _lock: lock,
        metrics,
    })
}

/// When each start-up step ended, for the start's timing line.
struct Timing {
    started: Instant,
    loaded: Duration,
    hooked: Duration,
}

/// What `load` loaded.
struct Loaded {
    ebpf: aya::Ebpf,
    prepared: Prepared,
    /// The pins were there: their maps are adopted.
    adopting: bool,
    hooks: CgroupHooks,
    /// A cgroup created or removed where the hooks follow patterns.
    cgroup_changes: mpsc::UnboundedReceiver<()>,
    timing: Timing,
}

/// The object (its maps pinned, an older layout migrated), the kernel's
/// log lines, and the cgroup programs. Nothing is attached yet.
fn load(opts: &RunOptions) -> Result<Loaded, Error> {
    let adopting = opts.pins.is_loaded();
    let started = Instant::now();
    let (mut ebpf, prepared) = object::load(&opts.pins)?;
    let loaded = started.elapsed();
    if let Some(from) = prepared.migrated_from {
        info!(
            "the pins at {} have map layout {from}, this loader layout {}: migrating in place; \
             carried {:?} (same kernel layout), the rest starts fresh",
            opts.pins.root().display(),
            LAYOUT_VERSION,
            prepared.carried
        );
    }
    kernel_log::spawn(&mut ebpf);
    let (cgroup_tx, cgroup_changes) = mpsc::unbounded_channel();
    let hooks = CgroupHooks::start(
        &mut ebpf,
        &opts.pins,
        !opts.policy.cgroups.is_empty(),
        cgroup_tx,
    );
    let hooked = started.elapsed();
    Ok(Loaded {
        ebpf,
        prepared,
        adopting,
        hooks,
        cgroup_changes,
        timing: Timing {
            started,
            loaded,
            hooked,
        },
    })
}

/// The policy maps, with the policy applied.
struct Applied {
    maps: PolicyMaps,
    /// When the policy was in the maps (from `Timing::started`).
    at: Duration,
}

/// The policy into the maps; its warnings, and the line that says what is
/// in force.
fn apply(opts: &RunOptions, loaded: &Loaded) -> Result<Applied, Error> {
    let mut maps = PolicyMaps::open(&opts.pins)?;
    let report = crate::policy::apply::apply(&mut maps, &opts.policy)?;
    let at = loaded.timing.started.elapsed();
    for w in check::warnings(&opts.policy) {
        warn!("WARNING: {w}");
    }
    say_applied(opts, loaded, &report);
    Ok(Applied { maps, at })
}

fn say_applied(opts: &RunOptions, loaded: &Loaded, report: &ApplyReport) {
    info!(
        "{} maps at {}; policy applied: {} blocked prefixes ({} removed), SMTP ports {:?} at {} burst {} ({} scope){}",
        match (loaded.adopting, loaded.prepared.migrated_from) {
            (true, _) => "adopted the pinned",
            (false, Some(_)) => "created the new layout's",
            (false, None) => "created and pinned the",
        },
        opts.pins.maps().display(),
        report.trie_entries,
        report.removed,
        opts.policy.smtp_ports,
        opts.policy.smtp_rate,
        opts.policy.smtp_burst,
        opts.policy.scope,
        if opts.policy.dry_run {
            ", DRY-RUN: nothing will be dropped"
        } else {
            ""
        },
    );
}

/// The filter in force: the engine followed, the endpoint maps opened, the
/// filter attached to every interface, endpoint and cgroup that exists and
/// matches; then an older layout's pins go.
fn attach(opts: RunOptions, loaded: Loaded, applied: Applied) -> Result<InForce, Error> {
    // The engine first: the endpoints' exceptions follow its containers.
    let docker = opts.docker.clone().map(|endpoint| {
        let identity = DockerIdentity::new(endpoint);
        identity.spawn();
        identity
    });
    let endpoints = Endpoints::open(&opts.pins, docker.clone())?;
    // The engine's networks and containers (attach.docker_networks,
    // coverage, `auto` cgroups), followed from here on.
    let networks = opts.docker.clone().map(|endpoint| {
        let w = NetworkWatch::new(endpoint);
        w.spawn();
        w
    });
    let config = ConfigTracker::new(
        ConfigRecord::new(
            opts.pins.root(),
            opts.config_path.as_deref(),
            opts.config_sha256,
            opts.watch_config,
        ),
        opts.state_file,
    );
    let mut filter = Filter::new(Parts {
        ebpf: loaded.ebpf,
        hooks: loaded.hooks,
        maps: applied.maps,
        endpoints,
        pins: opts.pins.clone(),
        mode: opts.mode,
        policy: opts.policy,
        config,
        engine: networks.is_some(),
    });
    let timing = loaded.timing;
    filter.release_unwanted_pins();
    let opened = timing.started.elapsed();
    filter.reconcile();
    let reconciled = timing.started.elapsed();
    filter.reconcile_cgroups();
    info!(
        "start: {:?} in all: programs loaded {:?}, cgroup hooks {:?}, policy {:?}, endpoint maps {:?}, interfaces and endpoints {:?}, cgroups {:?}",
        timing.started.elapsed(),
        timing.loaded,
        timing.hooked - timing.loaded,
        applied.at - timing.hooked,
        opened - applied.at,
        reconciled - opened,
        timing.started.elapsed() - reconciled,
    );
    let older = loaded.prepared.older;
    if !older.is_empty() {
        // Every link now runs this program (one whose swap failed keeps the
        // old program, and its maps by reference, enforcing as before).
        match layout::remove_older(&opts.pins, &older) {
            Ok(n) => info!(
                "removed {n} pin(s) of map layout(s) {:?}: the links run this loader's program",
                older
            ),
            Err(e) => warn!("removing the pins of layout(s) {:?}: {e}", older),
        }
    }
    Ok(InForce {
        filter,
        docker,
        networks,
        cgroup_changes: loaded.cgroup_changes,
        options: Options {
            config_path: opts.config_path,
            watch_config: opts.watch_config,
            overrides: opts.overrides,
            rescan: opts.rescan,
            events_socket: opts.events_socket,
            docker: opts.docker,
            detach_on_exit: opts.detach_on_exit,
        },
    })
}
