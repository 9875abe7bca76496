//! What wakes the loop, and the daemon's state between wakes.
//!
//! `observe` sets up every source of a wake (signals, the `--config` file,
//! the drop events, the engine, cgroups, links, the tick) once the filter is
//! in force; `Daemon::next_wake` waits for the first of them and says which
//! ([`Wake`]); `Daemon::handle` answers each kind with one method.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use egress_ebpf_common::events::DropEvent;
use futures::{FutureExt, StreamExt, stream::BoxStream};
use log::{info, warn};
use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
    sync::{mpsc, watch},
    time::Interval,
};

use crate::{
    daemon::{coverage, filter::Filter, readiness, watch::ConfigWatch},
    endpoint::{
        cgroup::{CgroupNames, EngineCgroups},
        coverage::SharedCoverage,
        engine::{DockerEndpoint, DockerIdentity},
        identity::{AddressesOnly, Identity},
        networks::NetworkWatch,
    },
    error::Error,
    kernel::{attach, netlink, system},
    observe::{
        config_record::Trigger,
        endpoints::EndpointLookup,
        events::{Decoder, EventReader, Publisher},
        metrics,
    },
    policy::Overrides,
};

/// What the loop reads of `RunOptions` (the filter holds the policy).
pub struct Options {
    /// Re-read on SIGHUP, and when it changes unless `watch_config` is off.
    pub config_path: Option<PathBuf>,
    pub watch_config: bool,
    pub overrides: Overrides,
    /// How often interfaces are re-listed.
    pub rescan: Duration,
    pub events_socket: Option<PathBuf>,
    /// The engine that names the senders of drop events.
    pub docker: Option<DockerEndpoint>,
    pub detach_on_exit: bool,
}

/// The filter in force, and what follows it: what `attach` hands `observe`.
pub struct InForce {
    pub filter: Filter,
    /// The engine's containers (names, exceptions), followed since `attach`.
    pub docker: Option<Arc<DockerIdentity>>,
    /// The engine's networks and containers (bridges, coverage, `auto`).
    pub networks: Option<Arc<NetworkWatch>>,
    /// A cgroup created or removed where the hooks follow patterns.
    pub cgroup_changes: mpsc::UnboundedReceiver<()>,
    pub options: Options,
}

/// What woke the loop.
pub enum Wake {
    /// SIGINT or SIGTERM.
    Stop(&'static str),
    /// SIGHUP: re-read `--config`.
    Reload,
    /// The `--config` file changed on disk (debounced).
    ConfigChanged,
    /// Drop events from the ring buffer.
    Events(Vec<DropEvent>),
    /// A container started or stopped.
    EngineChanged,
    /// The engine's networks changed (or it answered).
    NetworksChanged,
    /// The engine's cgroups changed, for `auto`.
    EngineCgroups(Option<EngineCgroups>),
    /// A cgroup was created or removed under a followed parent.
    CgroupsChanged,
    /// A netlink link event.
    LinksChanged,
    /// The rescan interval passed.
    Tick,
}

/// Why the loop ended.
pub enum End {
    /// SIGINT or SIGTERM: the filter stays (or goes, `--detach-on-exit`).
    Stop(&'static str),
    /// The pins were removed: nothing is left to touch.
    PinsRemoved,
}

/// SIGINT, SIGTERM, SIGHUP: ours from `observe` on.
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Self, Error> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// The daemon between wakes: the filter, and every source of a wake.
pub struct Daemon {
    filter: Filter,
    options: Options,
    signals: Signals,
    watch: Option<ConfigWatch>,
    reader: EventReader,
    publisher: Publisher,
    decoder: Decoder,
    cgroup_names: Arc<CgroupNames>,
    docker: Option<Arc<DockerIdentity>>,
    /// The engine's networks, and their changes.
    networks: Option<(Arc<NetworkWatch>, watch::Receiver<u64>)>,
    engine_cgroups: watch::Receiver<Option<EngineCgroups>>,
    /// Held for the whole run: without an engine no task sends, and the
    /// receiver must not see a closed channel.
    _engine_cgroups_keep: watch::Sender<Option<EngineCgroups>>,
    cgroup_changes: mpsc::UnboundedReceiver<()>,
    link_events: Option<BoxStream<'static, ()>>,
    tick: Interval,
    last_gc: Instant,
}

/// Everything that wakes the loop, set up once the filter is in force:
/// the signals (before READY=1), the config watch, the drop events, the
/// engine's coverage, `/metrics`, the netlink link events and the tick.
pub fn observe(in_force: InForce, metrics_listener: Option<TcpListener>) -> Result<Daemon, Error> {
    let InForce {
        filter,
        docker,
        networks,
        cgroup_changes,
        options: opts,
    } = in_force;
    // The signals are ours before READY=1: a stop that follows READY at once
    // (systemd, a test) must find the orderly exit, not the default action.
    let signals = Signals::install()?;
    // In force: the policy is in the maps and every interface that exists
    // and matches runs the filter. Units ordered after this one start now.
    let (interfaces, cgroups) = filter.attached_counts();
    readiness::ready(&format!(
        "in force on {} interface(s) and {} cgroup(s){}",
        interfaces,
        cgroups,
        match &opts.config_path {
            Some(p) => format!(", {} generation 1", p.display()),
            None => String::new(),
        }
    ));
    let watch = follow_config(&opts);
    let reader = EventReader::open(filter.pins())?;
    let publisher = Publisher::start(opts.events_socket.as_deref());
    let identity = identity(&docker);
    let latest_coverage = SharedCoverage::default();
    let (engine_cgroups_tx, engine_cgroups) = watch::channel(None);
    let _engine_cgroups_keep = engine_cgroups_tx.clone();
    let networks = networks.map(|n| {
        coverage::spawn(
            n.clone(),
            filter.coverage_attached(),
            latest_coverage.clone(),
            engine_cgroups_tx,
        );
        let changes = n.subscribe();
        (n, changes)
    });
    let cgroup_names = Arc::new(CgroupNames::default());
    if let Some(listener) = metrics_listener {
        let registry = metrics::registry(Arc::new(filter.metrics_source(
            networks.as_ref().map(|_| latest_coverage.clone()),
            docker.clone(),
        )));
        tokio::spawn(metrics::serve(listener, Arc::new(registry)));
    }
    let decoder = Decoder {
        interfaces: Default::default(),
        rules: filter.rule_descriptions()?,
        identity,
        endpoints: EndpointLookup::open(filter.pins()).ok(),
        cgroups: cgroup_names.clone(),
    };
    // After the last of the start's temporaries (the object, the policy's
    // map diff, the rule texts read back for the decoder).
    system::release_freed_heap();
    if interfaces == 0 {
        info!(
            "no interface matches {:?} yet; waiting for one to appear (checking every {:?})",
            filter.patterns(),
            opts.rescan
        );
    }

    let tick = tokio::time::interval(opts.rescan);
    let link_events = link_events(opts.rescan);
    Ok(Daemon {
        filter,
        options: opts,
        signals,
        watch,
        reader,
        publisher,
        decoder,
        cgroup_names,
        docker,
        networks,
        engine_cgroups,
        _engine_cgroups_keep,
        cgroup_changes,
        link_events,
        tick,
        last_gc: Instant::now(),
    })
}

/// The `--config` file followed on disk, unless turned off or not
/// watchable (then SIGHUP only).
fn follow_config(opts: &Options) -> Option<ConfigWatch> {
    match (&opts.config_path, opts.watch_config) {
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
    }
}

/// Who names the sender of a drop event: the engine, or nobody.
fn identity(docker: &Option<Arc<DockerIdentity>>) -> Arc<dyn Identity> {
    match docker {
        Some(d) => d.clone(),
        None => {
            info!("no Docker engine to ask: drop events carry addresses only");
            Arc::new(AddressesOnly)
        }
    }
}

/// The kernel's link events; without them the rescan finds new interfaces.
fn link_events(rescan: Duration) -> Option<BoxStream<'static, ()>> {
    let events = netlink::link_events().map(StreamExt::boxed);
    if events.is_none() {
        warn!(
            "no netlink link events; new interfaces are found by the rescan every {:?}",
            rescan
        );
    }
    events
}

impl Daemon {
    /// Waits for the first thing that wakes the loop. Fails only when the
    /// drop events cannot be read.
    pub async fn next_wake(&mut self) -> Result<Wake, Error> {
        Ok(tokio::select! {
            _ = self.signals.int.recv() => Wake::Stop("SIGINT"),
            _ = self.signals.term.recv() => Wake::Stop("SIGTERM"),
            _ = self.signals.hup.recv() => Wake::Reload,
            () = next_change(&mut self.watch) => Wake::ConfigChanged,
            batch = self.reader.next_batch() => Wake::Events(batch?),
            () = engine_changed(&self.docker) => Wake::EngineChanged,
            Some(()) = next_change_of(&mut self.networks) => Wake::NetworksChanged,
            Ok(()) = self.engine_cgroups.changed() => {
                Wake::EngineCgroups(self.engine_cgroups.borrow_and_update().clone())
            }
            Some(()) = self.cgroup_changes.recv() => Wake::CgroupsChanged,
            Some(()) = next_event(&mut self.link_events) => Wake::LinksChanged,
            _ = self.tick.tick() => Wake::Tick,
        })
    }

    /// Answers one wake; `Some` ends the loop.
    pub async fn handle(&mut self, wake: Wake) -> Option<End> {
        match wake {
            Wake::Stop(signal) => return Some(End::Stop(signal)),
            Wake::Reload => self.reload(),
            Wake::ConfigChanged => self.config_changed(),
            Wake::Events(batch) => self.publish(batch).await,
            // A container started or stopped: its exceptions follow.
            Wake::EngineChanged => self.filter.reconcile_endpoints(),
            Wake::NetworksChanged => self.networks_changed(),
            Wake::EngineCgroups(cgroups) => self.filter.engine_cgroups_changed(cgroups),
            Wake::CgroupsChanged => self.cgroups_changed(),
            Wake::LinksChanged => self.links_changed(),
            Wake::Tick => return self.tick(),
        }
        None
    }

    /// SIGHUP.
    fn reload(&mut self) {
        if self.filter.reload(
            Trigger::Sighup,
            self.options.config_path.as_deref(),
            &self.options.overrides,
        ) && let Ok(rules) = self.filter.rule_descriptions()
        {
            self.decoder.rules = rules;
        }
        system::release_freed_heap();
    }

    fn config_changed(&mut self) {
        if let (Some(path), Some(w)) = (self.options.config_path.as_deref(), self.watch.as_mut()) {
            let generation = self.filter.generation();
            self.filter.reload_if_changed(path, &self.options.overrides);
            w.rewatch();
            if self.filter.generation() != generation
                && let Ok(rules) = self.filter.rule_descriptions()
            {
                self.decoder.rules = rules;
            }
            system::release_freed_heap();
        }
    }

    /// Decodes a batch of drop events and hands it to the publisher.
    async fn publish(&mut self, batch: Vec<DropEvent>) {
        let decoder = &mut self.decoder;
        if batch.iter().any(|e| {
            !decoder.interfaces.contains_key(&e.ifindex)
                || (e.endpoint != 0 && !decoder.interfaces.contains_key(&e.endpoint))
        }) {
            decoder.interfaces = attach::interfaces()
                .into_iter()
                .map(|(n, i)| (i, n))
                .collect();
        }
        // The cgroup hooks name the sender by its cgroup: find it
        // (and its container) before decoding.
        if let Some((fs, roots)) = self.filter.hooked_cgroups() {
            for e in batch.iter().filter(|e| e.cgroup_id != 0) {
                self.cgroup_names
                    .resolve(e.cgroup_id, &fs, &roots, self.options.docker.as_ref())
                    .await;
            }
        }
        for e in &batch {
            self.publisher.publish(&self.decoder.decode(e));
        }
    }

    fn networks_changed(&mut self) {
        if let Some((n, _)) = &self.networks {
            self.filter
                .networks_changed(n.bridge_interfaces(), n.is_connected());
        }
    }

    fn cgroups_changed(&mut self) {
        // A burst of mkdirs (a container's scope and its children): look once.
        while self.cgroup_changes.try_recv().is_ok() {}
        self.filter.reconcile_cgroups();
    }

    fn links_changed(&mut self) {
        // Drain a burst (a bridge and its veths come together), then look once.
        while let Some(Some(())) = self
            .link_events
            .as_mut()
            .and_then(|s| s.next().now_or_never())
        {}
        self.filter.reconcile();
    }

    fn tick(&mut self) -> Option<End> {
        if !self.filter.pins().is_loaded() {
            warn!(
                "the pins at {} were removed (egress-loader detach?); exiting without touching anything",
                self.filter.pins().root().display()
            );
            self.filter.remove_state_file();
            return Some(End::PinsRemoved);
        }
        self.filter.reconcile();
        self.filter.reconcile_cgroups();
        if self.last_gc.elapsed() >= Duration::from_secs(10) {
            self.filter.forget_full_source_buckets();
            self.last_gc = Instant::now();
        }
        None
    }

    /// Leaves: the filter stays attached and pinned, or goes with
    /// `--detach-on-exit`; after the pins were removed, nothing is touched.
    pub fn shutdown(self, end: End) -> Result<(), Error> {
        let reason = match end {
            End::Stop(reason) => reason,
            End::PinsRemoved => return Ok(()),
        };
        readiness::stopping();
        let Daemon {
            filter,
            options,
            watch,
            publisher,
            reader,
            ..
        } = self;
        drop(watch);
        drop(publisher);
        drop(reader);
        if options.detach_on_exit {
            info!("{reason}: --detach-on-exit: removing the filter");
            let report = filter.detach()?;
            info!("{report}");
        } else {
            info!(
                "{reason}: exiting; the filter stays attached and pinned at {} (protection continues; `egress-loader detach` removes it)",
                filter.pins().root().display()
            );
        }
        Ok(())
    }
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

async fn next_change_of<T>(changes: &mut Option<(T, watch::Receiver<u64>)>) -> Option<()> {
    match changes {
        Some((_, rx)) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}
