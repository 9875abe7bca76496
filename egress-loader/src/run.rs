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

use aya::maps::{HashMap as BpfHashMap, MapData};
use egress_ebpf_common::maps::SMTP_SOURCE_BUCKETS;
use futures::{FutureExt, StreamExt};
use log::{error, info, warn};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    attach::{self, AttachMode, AttachOutcome},
    config::{Overrides, Policy, pattern_matches},
    error::Error,
    maps::PolicyMaps,
    object,
    pins::PinDir,
    policy,
    system::{self, PinDirLock},
};

pub struct RunOptions {
    pub policy: Policy,
    /// Re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
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
    pub docker: Option<crate::identity::DockerEndpoint>,
    /// Where `/metrics` is served; `None`: no metrics server.
    pub metrics_addr: Option<SocketAddr>,
}

/// Everything `run` holds while it runs.
struct Filter {
    ebpf: aya::Ebpf,
    maps: PolicyMaps,
    pins: PinDir,
    mode: AttachMode,
    policy: Policy,
    /// Interfaces we attached to, with the ifindex we attached to.
    attached: HashMap<String, u32>,
    /// The same, for the metrics server.
    published: crate::metrics::Attached,
}

pub async fn run(opts: RunOptions) -> Result<(), Error> {
    system::check_privileges()?;
    system::ensure_bpffs(opts.pins.root())?;
    std::fs::create_dir_all(opts.pins.root())?;
    let _lock = PinDirLock::acquire(opts.pins.root())?;
    // Before anything in the kernel changes: a busy port refuses the start.
    let metrics_listener = match opts.metrics_addr {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let adopting = opts.pins.is_loaded();
    let mut ebpf = object::load(&opts.pins)?;
    crate::kernel_log::spawn(&mut ebpf);
    let mut maps = PolicyMaps::open(&opts.pins)?;
    let report = policy::apply(&mut maps, &opts.policy)?;
    info!(
        "{} pinned maps at {}; policy applied: {} blocked prefixes ({} removed), SMTP ports {:?} at {} burst {} ({} scope){}",
        if adopting { "adopted the" } else { "created" },
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
    let mut filter = Filter {
        ebpf,
        maps,
        pins: opts.pins.clone(),
        mode: opts.mode,
        policy: opts.policy.clone(),
        attached: HashMap::new(),
        published: Default::default(),
    };
    filter.release_unwanted_pins();
    filter.reconcile();
    system::release_freed_heap();
    let mut reader = crate::events::EventReader::open(&opts.pins)?;
    let publisher = crate::events::Publisher::start(opts.events_socket.as_deref());
    let docker = opts.docker.clone().map(|endpoint| {
        let identity = crate::identity::DockerIdentity::new(endpoint);
        identity.spawn();
        identity
    });
    let identity: Arc<dyn crate::events::Identity> = match &docker {
        Some(d) => d.clone(),
        None => {
            info!("no Docker engine to ask: drop events carry addresses only");
            Arc::new(crate::events::AddressesOnly)
        }
    };
    if let Some(listener) = metrics_listener {
        let registry = crate::metrics::registry(Arc::new(crate::metrics::MetricsSource {
            pins: opts.pins.clone(),
            mode: opts.mode,
            attached: filter.published.clone(),
            docker: docker.clone(),
            started: SystemTime::now(),
        }));
        tokio::spawn(crate::metrics::serve(listener, Arc::new(registry)));
    }
    let mut decoder = crate::events::Decoder {
        interfaces: HashMap::new(),
        rules: crate::counters::rule_descriptions(&filter.maps)?,
        identity,
    };
    if filter.attached.is_empty() {
        info!(
            "no interface matches {:?} yet; waiting for one to appear (checking every {:?})",
            filter.policy.interfaces, opts.rescan
        );
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(opts.rescan);
    let mut link_events = crate::netlink::link_events();
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
                filter.reload(&opts);
                if let Ok(rules) = crate::counters::rule_descriptions(&filter.maps) {
                    decoder.rules = rules;
                }
            }
            batch = reader.next_batch() => {
                let batch = batch?;
                if batch.iter().any(|e| !decoder.interfaces.contains_key(&e.ifindex)) {
                    decoder.interfaces = attach::interfaces().into_iter().map(|(n, i)| (i, n)).collect();
                }
                for e in &batch {
                    publisher.publish(&decoder.decode(e));
                }
            }
            Some(()) = next_event(&mut link_events) => {
                // Drain a burst (a bridge and its veths come together), then look once.
                while let Some(Some(())) = link_events.as_mut().and_then(|s| s.next().now_or_never()) {}
                filter.reconcile();
            }
            _ = tick.tick() => {
                if !filter.pins.is_loaded() {
                    warn!("the pins at {} were removed (egress-loader detach?); exiting without touching anything", filter.pins.root().display());
                    return Ok(());
                }
                filter.reconcile();
                if last_gc.elapsed() >= Duration::from_secs(10) {
                    filter.forget_full_source_buckets();
                    last_gc = Instant::now();
                }
            }
        }
    };
    drop(publisher);
    drop(reader);
    if opts.detach_on_exit {
        info!("{reason}: --detach-on-exit: removing the filter");
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

impl Filter {
    fn wants(&self, ifname: &str) -> bool {
        self.policy
            .interfaces
            .iter()
            .any(|p| pattern_matches(p, ifname))
    }

    /// Attaches to new matching interfaces, forgets vanished ones.
    fn reconcile(&mut self) {
        let present = attach::interfaces();
        for (name, index) in &present {
            if !self.wants(name) || self.attached.get(name) == Some(index) {
                continue;
            }
            let prog = match object::classifier(&mut self.ebpf) {
                Ok(p) => p,
                Err(e) => {
                    error!("{e}");
                    return;
                }
            };
            match attach::attach(prog, &self.pins, name, self.mode) {
                Ok(AttachOutcome::Attached) => info!(
                    "{name} (ifindex {index}): attached to ingress [{}]",
                    self.mode.resolve().name()
                ),
                Ok(AttachOutcome::Adopted) => info!(
                    "{name} (ifindex {index}): adopted the existing attachment, now running this program"
                ),
                Err(e) => {
                    // Retried on the next scan; the interface may be going away.
                    error!("{name}: {e}");
                    continue;
                }
            }
            self.attached.insert(name.clone(), *index);
        }
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|n| !present.iter().any(|(p, _)| p == *n))
            .cloned()
            .collect();
        for name in gone {
            self.attached.remove(&name);
            let path = self.pins.link(&name);
            if path.exists() {
                let _ = std::fs::remove_file(&path);
            }
            info!("{name}: interface gone; forgot its link");
        }
        let mut published = self.published.write().unwrap_or_else(|e| e.into_inner());
        published.clear();
        published.extend(self.attached.iter().map(|(n, i)| (n.clone(), *i)));
    }

    /// Pinned links of interfaces that no longer exist or no longer match.
    fn release_unwanted_pins(&mut self) {
        let present = attach::interfaces();
        for name in self.pins.pinned_links() {
            let exists = present.iter().any(|(n, _)| *n == name);
            if exists && self.wants(&name) {
                continue;
            }
            match attach::detach(&self.pins, &name) {
                Ok(_) if exists => info!(
                    "{name}: no longer matches {:?}; detached",
                    self.policy.interfaces
                ),
                Ok(_) => info!("{name}: interface gone; released its stale link"),
                Err(e) => error!("{name}: {e}"),
            }
        }
    }

    fn reload(&mut self, opts: &RunOptions) {
        let Some(path) = &opts.config_path else {
            info!("SIGHUP: no --config file to re-read; policy unchanged");
            return;
        };
        let policy = match Policy::from_file(path, &opts.overrides) {
            Ok(p) => p,
            Err(e) => {
                error!(
                    "SIGHUP: {}: {e}; keeping the policy in force",
                    path.display()
                );
                return;
            }
        };
        match policy::apply(&mut self.maps, &policy) {
            Ok(r) => {
                info!(
                    "SIGHUP: applied {}: {} blocked prefixes ({} removed)",
                    path.display(),
                    r.trie_entries,
                    r.removed
                );
                self.policy = policy;
                self.release_unwanted_pins();
                self.attached
                    .retain(|n, _| self.policy.interfaces.iter().any(|p| pattern_matches(p, n)));
                self.reconcile();
                system::release_freed_heap();
            }
            Err(e) => error!("SIGHUP: applying {}: {e}", path.display()),
        }
    }

    /// Per-source buckets that have refilled completely are identical to a
    /// fresh bucket, so deleting them gives nothing away and keeps the table
    /// from filling with containers long gone. One emission interval of margin
    /// keeps a bucket the kernel is updating right now out of reach.
    fn forget_full_source_buckets(&mut self) {
        let Ok(data) = MapData::from_pin(self.pins.map(SMTP_SOURCE_BUCKETS)) else {
            return;
        };
        let Ok(mut map) =
            BpfHashMap::<MapData, [u8; 16], u64>::try_from(aya::maps::Map::HashMap(data))
        else {
            return;
        };
        let now = monotonic_ns();
        let margin = self.policy.gcra().emission_ns;
        let stale: Vec<[u8; 16]> = map
            .iter()
            .flatten()
            .filter(|(_, tat)| tat.saturating_add(margin) <= now)
            .map(|(k, _)| k)
            .collect();
        for k in &stale {
            let _ = map.remove(k);
        }
        if !stale.is_empty() {
            log::debug!("forgot {} refilled per-source buckets", stale.len());
        }
    }
}

async fn next_event(events: &mut Option<impl futures::Stream<Item = ()> + Unpin>) -> Option<()> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// CLOCK_MONOTONIC. The classifier's buckets run on CLOCK_MONOTONIC_COARSE
/// (bpf_ktime_get_coarse_ns), which lags it by at most one tick.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// `detach`: every link and legacy filter we own, then every pin.
pub fn detach_all(pins: &PinDir) -> Result<String, Error> {
    let mut links = 0;
    for name in pins.pinned_links() {
        if attach::detach(pins, &name)? {
            links += 1;
        }
    }
    // Legacy filters carry no pin: look on every interface.
    for (name, _) in attach::interfaces() {
        if attach::detach(pins, &name)? {
            links += 1;
        }
    }
    let mut maps = 0;
    for name in egress_ebpf_common::maps::ALL {
        let p = pins.map(name);
        if p.exists() {
            std::fs::remove_file(&p)?;
            maps += 1;
        }
    }
    for d in [pins.links(), pins.maps(), pins.root().to_path_buf()] {
        if d.exists() {
            std::fs::remove_dir(&d)
                .map_err(|e| Error::Invalid(format!("removing {}: {e}", d.display())))?;
        }
    }
    Ok(format!(
        "detached from {links} interface(s), removed {maps} pinned map(s) and {}",
        pins.root().display()
    ))
}
