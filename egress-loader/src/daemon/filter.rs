//! `Filter`: what is in the kernel while `run` runs (the object, the maps,
//! the policy in force, the attachments) and what decides them. Its fields
//! are private to this module; the loop and the start-up phases ask it
//! through methods. Its methods are here (construction, questions, leaving)
//! and, one file per concern, in `filter/`:
//!
//! ```text
//! filter/interfaces.rs  the bridges' program: attach to matching interfaces, forget, release
//! filter/endpoints.rs   the veths' program and entries (the state: daemon/endpoints.rs)
//! filter/tunnels.rs     the tunnels' program: every decapsulating device, by link kind
//! filter/cgroups.rs     the cgroup hooks (the state: daemon/cgroups.rs), what is attached
//! filter/reload.rs      a new policy (SIGHUP, a file change) without detaching
//! ```

mod cgroups;
mod endpoints;
mod interfaces;
mod reload;
mod tunnels;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use crate::{
    daemon::{cgroups::CgroupHooks, endpoints::Endpoints, gc, record::ConfigTracker},
    endpoint::{
        cgroup::EngineCgroups,
        coverage::{Attached, SharedCoverage},
        engine::DockerIdentity,
    },
    error::Error,
    kernel::{
        attach::{AttachMode, detach_all},
        maps::PolicyMaps,
        pins::PinDir,
    },
    observe::{
        counters::{self, RuleDescriptions},
        metrics::{self, MetricsSource},
    },
    policy::Policy,
};

/// Everything `run` holds in the kernel while it runs.
pub struct Filter {
    ebpf: aya::Ebpf,
    maps: PolicyMaps,
    pins: PinDir,
    mode: AttachMode,
    policy: Policy,
    /// Interfaces we attached to, with the ifindex we attached to.
    attached: HashMap<String, u32>,
    /// Decapsulating devices we attached the tunnel program to (name ->
    /// ifindex), filter/tunnels.rs.
    tunnels: HashMap<String, u32>,
    /// The same, for the metrics server.
    published: metrics::Attached,
    /// Which configuration is in force.
    config: ConfigTracker,
    /// The containers' veths (daemon::endpoints); `None` only while
    /// `filter/endpoints.rs` works on it.
    endpoints: Option<Endpoints>,
    /// The engine's bridges and cgroups, the cgroup hooks (daemon::cgroups).
    coverage: Coverage,
}

/// What `run` knows beyond its patterns: the engine's bridges and cgroups,
/// the cgroup hooks, and what is attached (for coverage).
struct Coverage {
    hooks: CgroupHooks,
    /// The engine's bridge interfaces (`attach.docker_networks`).
    bridges: BTreeSet<String>,
    /// The engine answered (or none is asked): pins of interfaces and
    /// cgroups it does not name can be released.
    settled: bool,
    /// The engine's cgroup driver and containers' cgroups, for `auto`.
    engine_cgroups: Option<EngineCgroups>,
    /// An engine is asked (`--docker-host`, not `--no-docker`).
    engine: bool,
    /// Published after each reconcile, for the coverage task.
    attached: Arc<RwLock<Attached>>,
}

/// What the start-up phases hand the filter.
pub struct Parts {
    pub ebpf: aya::Ebpf,
    pub hooks: CgroupHooks,
    pub maps: PolicyMaps,
    pub endpoints: Endpoints,
    pub pins: PinDir,
    pub mode: AttachMode,
    pub policy: Policy,
    pub config: ConfigTracker,
    /// An engine is asked: until it answers, what it may name stays.
    pub engine: bool,
}

impl Filter {
    /// Nothing attached yet: [`Filter::release_unwanted_pins`],
    /// [`Filter::reconcile`] and [`Filter::reconcile_cgroups`] attach.
    pub fn new(p: Parts) -> Self {
        Filter {
            endpoints: Some(p.endpoints),
            coverage: Coverage {
                hooks: p.hooks,
                bridges: Default::default(),
                settled: !p.engine,
                engine_cgroups: None,
                engine: p.engine,
                attached: Default::default(),
            },
            ebpf: p.ebpf,
            maps: p.maps,
            pins: p.pins,
            mode: p.mode,
            policy: p.policy,
            attached: HashMap::new(),
            tunnels: HashMap::new(),
            published: Default::default(),
            config: p.config,
        }
    }

    /// Where the filter's pins are.
    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// The interface patterns of the policy in force.
    pub fn patterns(&self) -> &[String] {
        &self.policy.interfaces
    }

    /// (interfaces, cgroups) the bridge and tunnel programs and the cgroup
    /// hooks are attached to.
    pub fn attached_counts(&self) -> (usize, usize) {
        (
            self.attached.len() + self.tunnels.len(),
            self.coverage.hooks.attached_count(),
        )
    }

    /// The generation of the configuration in force.
    pub fn generation(&self) -> u64 {
        self.config.record().generation
    }

    /// The rules' texts as the maps hold them, for the event decoder.
    pub fn rule_descriptions(&self) -> Result<RuleDescriptions, Error> {
        counters::rule_descriptions(&self.maps)
    }

    /// What is attached, as the coverage task reads it.
    pub fn coverage_attached(&self) -> Arc<RwLock<Attached>> {
        self.coverage.attached.clone()
    }

    /// What `/metrics` reads besides the pins.
    pub fn metrics_source(
        &self,
        coverage: Option<SharedCoverage>,
        docker: Option<Arc<DockerIdentity>>,
    ) -> MetricsSource {
        MetricsSource {
            coverage,
            cgroups: self.coverage.hooks.fs().cloned(),
            pins: self.pins.clone(),
            mode: self.mode,
            attached: self.published.clone(),
            docker,
            started: SystemTime::now(),
            config: Some(self.config.record.clone()),
        }
    }

    /// Forgets refilled per-source SMTP buckets (daemon::gc).
    pub fn forget_full_source_buckets(&self) {
        gc::forget_full_source_buckets(&self.pins, self.policy.gcra().emission_ns);
    }

    /// The state file goes: no configuration is in force from this loader.
    pub fn remove_state_file(&self) {
        self.config.remove();
    }

    /// `--detach-on-exit`: the state file, then the object and the maps,
    /// then every pin. Returns `detach_all`'s report.
    pub fn detach(self) -> Result<String, Error> {
        self.config.remove();
        drop(self.maps);
        drop(self.ebpf);
        detach_all(&self.pins)
    }
}
