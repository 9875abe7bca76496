//! `run`: load, apply the policy, attach to every matching interface, follow
//! interfaces as they come and go, and leave everything pinned on exit (or
//! remove it with `--detach-on-exit`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use aya::util::KernelVersion;
use futures::{FutureExt, StreamExt};
use log::{info, warn};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    daemon::{
        cgroups::{CgroupHooks, CoverageState},
        coverage,
        endpoints::Endpoints,
        gc, readiness,
        reconcile::Filter,
        record::ConfigTracker,
        watch::ConfigWatch,
    },
    endpoint::{
        cgroup::CgroupNames,
        engine::{DockerEndpoint, DockerIdentity},
        identity::{AddressesOnly, Identity},
        networks::NetworkWatch,
    },
    error::Error,
    kernel::{
        attach::{self, AttachMode, detach_all},
        layout,
        maps::PolicyMaps,
        netlink, object,
        pins::PinDir,
        system::{self, PinDirLock},
    },
    observe::{
        config_record::{ConfigRecord, Trigger},
        counters,
        events::{Decoder, EventReader, Publisher},
        metrics::{self, MetricsSource},
    },
    policy::{Overrides, Policy, apply},
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
    if let Some(e) = crate::endpoint::cgroup::missing_required(
        &opts.policy.cgroups,
        &crate::endpoint::cgroup::find_host_tree(),
    ) {
        return Err(Error::Cgroup(e));
    }
    system::ensure_bpffs(opts.pins.root())?;
    std::fs::create_dir_all(opts.pins.root())?;
    let _lock = PinDirLock::acquire(opts.pins.root())?;
    // Before anything in the kernel changes: a busy port refuses the start.
    let metrics_listener = match opts.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let adopting = opts.pins.is_loaded();
    let started = Instant::now();
    let (mut ebpf, prepared) = object::load(&opts.pins)?;
    let loaded = started.elapsed();
    if let Some(from) = prepared.migrated_from {
        info!(
            "the pins at {} have map layout {from}, this loader layout {}: migrating in place; \
             carried {:?} (same kernel layout), the rest starts fresh",
            opts.pins.root().display(),
            crate::kernel::pins::LAYOUT_VERSION,
            prepared.carried
        );
    }
    crate::observe::kernel_log::spawn(&mut ebpf);
    let (cgroup_tx, mut cgroup_changes) = tokio::sync::mpsc::unbounded_channel();
    let hooks = CgroupHooks::start(
        &mut ebpf,
        &opts.pins,
        !opts.policy.cgroups.is_empty(),
        cgroup_tx,
    );
    let hooked = started.elapsed();
    let mut maps = PolicyMaps::open(&opts.pins)?;
    let report = apply::apply(&mut maps, &opts.policy)?;
    let applied = started.elapsed();
    for w in crate::policy::check::warnings(&opts.policy) {
        warn!("WARNING: {w}");
    }
    info!(
        "{} maps at {}; policy applied: {} blocked prefixes ({} removed), SMTP ports {:?} at {} burst {} ({} scope){}",
        match (adopting, prepared.migrated_from) {
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
    let mut filter = Filter {
        endpoints: Some(endpoints),
        coverage: CoverageState {
            hooks,
            bridges: Default::default(),
            settled: networks.is_none(),
            engine_cgroups: None,
            engine: networks.is_some(),
            attached: Default::default(),
        },
        ebpf,
        maps,
        pins: opts.pins.clone(),
        mode: opts.mode,
        policy: opts.policy,
        attached: HashMap::new(),
        published: Default::default(),
        config: ConfigTracker::new(
            ConfigRecord::new(
                opts.pins.root(),
                opts.config_path.as_deref(),
                opts.config_sha256.clone(),
                opts.watch_config,
            ),
            opts.state_file.clone(),
        ),
    };
    filter.release_unwanted_pins();
    let opened = started.elapsed();
    filter.reconcile();
    let reconciled = started.elapsed();
    filter.reconcile_cgroups();
    info!(
        "start: {:?} in all: programs loaded {:?}, cgroup hooks {:?}, policy {:?}, endpoint maps {:?}, interfaces and endpoints {:?}, cgroups {:?}",
        started.elapsed(),
        loaded,
        hooked - loaded,
        applied - hooked,
        opened - applied,
        reconciled - opened,
        started.elapsed() - reconciled,
    );
    if !prepared.older.is_empty() {
        // Every link now runs this program (one whose swap failed keeps the
        // old program, and its maps by reference, enforcing as before).
        match layout::remove_older(&opts.pins, &prepared.older) {
            Ok(n) => info!(
                "removed {n} pin(s) of map layout(s) {:?}: the links run this loader's program",
                prepared.older
            ),
            Err(e) => warn!("removing the pins of layout(s) {:?}: {e}", prepared.older),
        }
    }
    // The signals are ours before READY=1: a stop that follows READY at once
    // (systemd, a test) must find the orderly exit, not the default action.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // In force: the policy is in the maps and every interface that exists
    // and matches runs the filter. Units ordered after this one start now.
    readiness::ready(&format!(
        "in force on {} interface(s) and {} cgroup(s){}",
        filter.attached.len(),
        filter.coverage.hooks.attached.len(),
        match &opts.config_path {
            Some(p) => format!(", {} generation 1", p.display()),
            None => String::new(),
        }
    ));
    let mut watch = match (&opts.config_path, opts.watch_config) {
        (Some(path), true) => match ConfigWatch::start(path) {
            Ok(w) => {
                info!(
                    "following {}: a change is applied like SIGHUP",
                    path.display()
                );
                Some(w)
            }
            Err(e) => {
                warn!(
                    "cannot follow {} ({e}); it is re-read on SIGHUP only",
                    path.display()
                );
                None
            }
        },
        _ => None,
    };
    let mut reader = EventReader::open(&opts.pins)?;
    let publisher = Publisher::start(opts.events_socket.as_deref());
    let identity: Arc<dyn Identity> = match &docker {
        Some(d) => d.clone(),
        None => {
            info!("no Docker engine to ask: drop events carry addresses only");
            Arc::new(AddressesOnly)
        }
    };
    let latest_coverage = crate::endpoint::coverage::SharedCoverage::default();
    let (engine_cgroups_tx, mut engine_cgroups) = tokio::sync::watch::channel(None);
    // Held for the whole run: without an engine no task sends, and the
    // receiver must not see a closed channel.
    let _engine_cgroups_keep = engine_cgroups_tx.clone();
    let mut network_changes = networks.as_ref().map(|n| {
        coverage::spawn(
            n.clone(),
            filter.coverage.attached.clone(),
            latest_coverage.clone(),
            engine_cgroups_tx,
        );
        n.subscribe()
    });
    let cgroup_names = Arc::new(CgroupNames::default());
    if let Some(listener) = metrics_listener {
        let registry = metrics::registry(Arc::new(MetricsSource {
            coverage: networks.as_ref().map(|_| latest_coverage.clone()),
            cgroups: filter.coverage.hooks.fs.clone(),
            pins: opts.pins.clone(),
            mode: opts.mode,
            attached: filter.published.clone(),
            docker: docker.clone(),
            started: SystemTime::now(),
            config: Some(filter.config.record.clone()),
        }));
        tokio::spawn(metrics::serve(listener, Arc::new(registry)));
    }
    let mut decoder = Decoder {
        interfaces: HashMap::new(),
        rules: counters::rule_descriptions(&filter.maps)?,
        identity,
        endpoints: crate::observe::endpoints::EndpointLookup::open(&opts.pins).ok(),
        cgroups: cgroup_names.clone(),
    };
    // After the last of the start's temporaries (the object, the policy's
    // map diff, the rule texts read back for the decoder).
    system::release_freed_heap();
    if filter.attached.is_empty() {
        info!(
            "no interface matches {:?} yet; waiting for one to appear (checking every {:?})",
            filter.policy.interfaces, opts.rescan
        );
    }

    let mut tick = tokio::time::interval(opts.rescan);
    let mut link_events = netlink::link_events();
    if link_events.is_none() {
        warn!(
            "no netlink link events; new interfaces are found by the rescan every {:?}",
            opts.rescan
        );
    }
    let mut last_gc = Instant::now();
    let reason = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = sighup.recv() => {
                if filter.reload(Trigger::Sighup, opts.config_path.as_deref(), &opts.overrides)
                    && let Ok(rules) = counters::rule_descriptions(&filter.maps)
                {
                    decoder.rules = rules;
                }
                system::release_freed_heap();
            }
            () = next_change(&mut watch) => {
                if let (Some(path), Some(w)) = (opts.config_path.as_deref(), watch.as_mut()) {
                    let generation = filter.config.record().generation;
                    filter.reload_if_changed(path, &opts.overrides);
                    w.rewatch();
                    if filter.config.record().generation != generation
                        && let Ok(rules) = counters::rule_descriptions(&filter.maps)
                    {
                        decoder.rules = rules;
                    }
                    system::release_freed_heap();
                }
            }
            batch = reader.next_batch() => {
                let batch = batch?;
                if batch.iter().any(|e| !decoder.interfaces.contains_key(&e.ifindex)
                    || (e.endpoint != 0 && !decoder.interfaces.contains_key(&e.endpoint)))
                {
                    decoder.interfaces = attach::interfaces().into_iter().map(|(n, i)| (i, n)).collect();
                }
                // The cgroup hooks name the sender by its cgroup: find it
                // (and its container) before decoding.
                if let Some(fs) = filter.coverage.hooks.fs.clone() {
                    let roots = filter.coverage.hooks.roots();
                    for e in batch.iter().filter(|e| e.cgroup_id != 0) {
                        cgroup_names
                            .resolve(e.cgroup_id, &fs, &roots, opts.docker.as_ref())
                            .await;
                    }
                }
                for e in &batch {
                    publisher.publish(&decoder.decode(e));
                }
            }
            () = engine_changed(&docker) => {
                // A container started or stopped: its exceptions follow.
                filter.reconcile_endpoints();
            }
            Some(()) = next_change_of(&mut network_changes) => {
                if let Some(n) = &networks {
                    filter.coverage.bridges = n.bridge_interfaces();
                    if n.is_connected() && !filter.coverage.settled {
                        filter.coverage.settled = true;
                        filter.release_unwanted_pins();
                    }
                }
                filter.reconcile();
            }
            Ok(()) = engine_cgroups.changed() => {
                filter.coverage.engine_cgroups = engine_cgroups.borrow_and_update().clone();
                filter.reconcile_cgroups();
            }
            Some(()) = cgroup_changes.recv() => {
                // A burst of mkdirs (a container's scope and its children): look once.
                while cgroup_changes.try_recv().is_ok() {}
                filter.reconcile_cgroups();
            }
            Some(()) = next_event(&mut link_events) => {
                // Drain a burst (a bridge and its veths come together), then look once.
                while let Some(Some(())) = link_events.as_mut().and_then(|s| s.next().now_or_never()) {}
                filter.reconcile();
            }
            _ = tick.tick() => {
                if !filter.pins.is_loaded() {
                    warn!("the pins at {} were removed (egress-loader detach?); exiting without touching anything", filter.pins.root().display());
                    filter.config.remove();
                    return Ok(());
                }
                filter.reconcile();
                filter.reconcile_cgroups();
                if last_gc.elapsed() >= Duration::from_secs(10) {
                    gc::forget_full_source_buckets(&filter.pins, filter.policy.gcra().emission_ns);
                    last_gc = Instant::now();
                }
            }
        }
    };
    readiness::stopping();
    drop(watch);
    drop(publisher);
    drop(reader);
    if opts.detach_on_exit {
        info!("{reason}: --detach-on-exit: removing the filter");
        filter.config.remove();
        drop(filter.maps);
        drop(filter.ebpf);
        let report = detach_all(&opts.pins)?;
        info!("{report}");
    } else {
        info!(
            "{reason}: exiting; the filter stays attached and pinned at {} (protection continues; `egress-loader detach` removes it)",
            opts.pins.root().display()
        );
    }
    Ok(())
}
async fn next_change(watch: &mut Option<ConfigWatch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

async fn engine_changed(docker: &Option<Arc<DockerIdentity>>) {
    match docker {
        Some(d) => d.changed().await,
        None => std::future::pending().await,
    }
}

async fn next_event(events: &mut Option<impl futures::Stream<Item = ()> + Unpin>) -> Option<()> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn next_change_of(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Option<()> {
    match changes {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}
