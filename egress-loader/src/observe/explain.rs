//! `explain`: what the filter in force would do with a connection, without
//! sending anything. The policy is read back from the pins (the tries, the
//! config slot in force, the SMTP buckets' state) into the host's model of
//! the maps, and the client's first packet is judged by the decision code
//! the kernel runs (`egress_ebpf_common::decide`); the model's buckets are
//! charged, never the kernel's. Like `iptables -C`, Cilium's `policy trace`.
//!
//! Which hook judges the client is worked out from what exists now: a
//! container's coverage (`endpoint::coverage`, as `status` shows it), or for
//! an address the host's interface whose subnet holds it, and the bridge
//! port its MAC was learned on (neighbour table, then the bridge's FDB).
//! The hook decides the view of the maps: a veth's program reads its
//! endpoint's exceptions and SMTP budget, the cgroup hooks key the bucket by
//! cgroup, the bridge by source address (egress-ebpf/src/view.rs,
//! egress-ebpf/src/cgroup.rs; docs/design.md, Endpoints).

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use egress_ebpf_common::{
    bucket::Gcra,
    config::{OVER_LIMIT_REJECT, PolicyConfig, SCOPE_PER_CONTAINER, SCOPE_PER_SOURCE},
    decide::{Action, PolicyView},
    endpoint::{
        ENDPOINT_EXCEPTED, ENDPOINT_OWN_SMTP, ENDPOINT_SMTP_UNLIMITED, Endpoint, endpoint_slot,
    },
    maps::{
        BLOCKED_V4, BLOCKED_V6, EXCEPTIONS, SMTP_BUCKET, SMTP_GLOBAL_SLOT, SMTP_GLOBAL_SLOTS,
        SMTP_OVERFLOW_SLOT, SMTP_SOURCE_BUCKETS,
    },
    model::{PolicyModel, Prefixes},
    parse::v4_mapped,
    rules::{BlockRule, NO_RULE},
    sockaddr::cgroup_bucket_key,
};
use serde::Serialize;

use crate::{
    Error,
    endpoint::{
        containers::{self, ContainerInfo},
        coverage::{self, ContainerCoverage, HookKind},
        engine::{DockerEndpoint, EngineError, container_addresses},
        networks,
    },
    error::ConfigError,
    kernel::{attach, cgroup::CgroupAttachment, clock::monotonic_ns, maps, netlink, pins::PinDir},
    observe::{
        counters::rule_texts,
        endpoints::{EndpointInfo, EndpointLookup},
        status::{self, InterfaceStatus},
    },
    policy::{
        apply::read_config,
        trace::{first_packet, judge},
        values::Protocol,
    },
};

/// The hook that would judge a client's connection, or why none would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    /// `veth`, `bridge`, `cgroup` (a hook judges it); `none` (no network:
    /// nothing leaves it), `uncovered` (no hook sees it), `unfiltered` (not
    /// a source the filter judges); `any` (no client given).
    pub kind: &'static str,
    /// The interface (veth, bridge) or the cgroup whose hook judges it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The program and hook, in words.
    pub text: String,
    /// Why no hook judges it, or what is not known about the sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The veth's ifindex: the endpoint id.
    #[serde(skip)]
    pub ifindex: Option<u32>,
    /// The container's cgroup id (the cgroup hooks' bucket key).
    #[serde(skip)]
    pub cgroup_id: Option<u64>,
}

impl Hook {
    /// No client given: whichever container connects.
    pub fn any() -> Self {
        Self {
            kind: "any",
            via: None,
            text: "egress_endpoint on the client's veth where attached, else egress_filter on its \
                   bridge (tc ingress); cgroup hooks for host-network containers"
                .into(),
            reason: None,
            ifindex: None,
            cgroup_id: None,
        }
    }

    fn veth(name: &str, ifindex: Option<u32>) -> Self {
        Self {
            kind: "veth",
            via: Some(name.to_owned()),
            text: format!("veth {name} (egress_endpoint, tc ingress of the container's veth)"),
            reason: None,
            ifindex,
            cgroup_id: None,
        }
    }

    fn bridge(name: &str, reason: Option<String>) -> Self {
        Self {
            kind: "bridge",
            via: Some(name.to_owned()),
            text: format!(
                "bridge {name} (egress_filter, tc ingress; the sender known by its source address)"
            ),
            reason,
            ifindex: None,
            cgroup_id: None,
        }
    }

    fn unjudged(kind: &'static str, reason: String) -> Self {
        Self {
            kind,
            via: None,
            text: match kind {
                "none" => "none: the container has no network, nothing leaves it".into(),
                "uncovered" => "UNCOVERED: no hook of the filter sees it".into(),
                _ => "none: not a source the filter judges".into(),
            },
            reason: Some(reason),
            ifindex: None,
            cgroup_id: None,
        }
    }

    /// Whether a hook of the filter judges the connection.
    pub fn judges(&self) -> bool {
        matches!(self.kind, "veth" | "bridge" | "cgroup" | "any")
    }
}

/// The hook of a container, from its coverage (the same computation
/// `status` shows); `info` is its engine entry (its cgroup), `names` the
/// host's interfaces (name, ifindex), `cgroups` the cgroup hooks' links as
/// the kernel has them (which hooks a host-network container meets: the
/// sendmsg hooks where `cgroup_skb` cannot load).
pub fn container_hook(
    c: &ContainerCoverage,
    info: Option<&ContainerInfo>,
    names: &[(String, u32)],
    cgroups: &[CgroupAttachment],
) -> Hook {
    let ifindex = |n: &str| names.iter().find(|(m, _)| m == n).map(|(_, i)| *i);
    match c.hook {
        HookKind::Veth => {
            // A container on several networks has one veth each; the one
            // its route to the destination takes judges it.
            let v = c.via.first().cloned().unwrap_or_default();
            let mut h = Hook::veth(&v, ifindex(&v));
            if c.via.len() > 1 {
                h.reason = Some(format!(
                    "on several networks: the veth of the network its route takes ({})",
                    c.via.join(", ")
                ));
            }
            h
        }
        HookKind::Bridge => Hook::bridge(
            &c.via.join(", "),
            Some("its veth has no egress_endpoint attached (yet): the bridge judges it".into()),
        ),
        HookKind::Cgroup => {
            let cgroup = info.and_then(|i| i.cgroup.clone()).unwrap_or_default();
            let id = crate::endpoint::cgroup::find_host_tree()
                .fs()
                .and_then(|f| f.id(&cgroup));
            let mut hooks: Vec<&str> = Vec::new();
            for a in cgroups
                .iter()
                .filter(|a| c.via.contains(&format!("/{}", a.cgroup)))
            {
                for h in &a.live {
                    if !hooks.contains(&h.name()) {
                        hooks.push(h.name());
                    }
                }
            }
            Hook {
                kind: "cgroup",
                via: Some(format!("/{cgroup}")),
                text: format!(
                    "cgroup /{cgroup} ({} attached at {})",
                    hooks.join(", "),
                    c.via.join(", ")
                ),
                reason: (!c.caveats.is_empty()).then(|| c.caveats.join("; ")),
                ifindex: None,
                cgroup_id: id,
            }
        }
        HookKind::None => Hook::unjudged("none", "network mode none".into()),
        HookKind::Uncovered => Hook::unjudged(
            "uncovered",
            c.reason.clone().unwrap_or_else(|| "no hook sees it".into()),
        ),
    }
}

/// What the host has that tells which hook sees a source address.
#[derive(Debug, Clone, Default)]
pub struct HostNet {
    /// (interface, address, prefix length) of every address of this host.
    pub addresses: Vec<(String, IpAddr, u8)>,
    /// The bridges, by name: their ifindex.
    pub bridges: BTreeMap<String, u32>,
    /// Interfaces with a live attachment: `bridge` or `endpoint`.
    pub attached: BTreeMap<String, &'static str>,
    /// (ifindex resolved on, address, MAC): the neighbour table.
    pub neighbours: Vec<(u32, IpAddr, [u8; 6])>,
    /// (bridge ifindex, MAC, port ifindex): the bridges' FDB.
    pub fdb: Vec<(u32, [u8; 6], u32)>,
    /// ifindex -> interface name.
    pub names: BTreeMap<u32, String>,
}

fn prefix_len(mask: &[u8]) -> u8 {
    mask.iter().map(|b| b.count_ones() as u8).sum()
}

impl HostNet {
    /// This network namespace as it is now; `interfaces` is `status`'s
    /// reading of the attachments.
    pub fn read(interfaces: &[InterfaceStatus]) -> Self {
        let mut h = HostNet::default();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
                    continue;
                };
                if let (Some(ip), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                    let ip: Ipv4Addr = ip.ip();
                    let m: Ipv4Addr = m.ip();
                    h.addresses
                        .push((a.interface_name, ip.into(), prefix_len(&m.octets())));
                } else if let (Some(ip), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6())
                {
                    h.addresses.push((
                        a.interface_name,
                        ip.ip().into(),
                        prefix_len(&m.ip().octets()),
                    ));
                }
            }
        }
        for l in netlink::dump_links().unwrap_or_default() {
            if l.kind.as_deref() == Some("bridge") {
                h.bridges.insert(l.name.clone(), l.index);
            }
            h.names.insert(l.index, l.name);
        }
        h.attached = interfaces
            .iter()
            .filter(|i| i.attached)
            .map(|i| (i.name.clone(), i.role))
            .collect();
        for n in netlink::dump_neighbours(false).unwrap_or_default() {
            if let (Some(ip), Some(mac)) = (n.ip, n.mac) {
                h.neighbours.push((n.ifindex, ip, mac));
            }
        }
        for n in netlink::dump_neighbours(true).unwrap_or_default() {
            if let (Some(bridge), Some(mac)) = (n.master, n.mac) {
                h.fdb.push((bridge, mac, n.ifindex));
            }
        }
        h
    }
}

fn contains(net: IpAddr, len: u8, a: IpAddr) -> bool {
    let (n, a, bits): (u128, u128, u32) = match (net, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n).into(), u32::from(a).into(), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (n.into(), a.into(), 128),
        _ => return false,
    };
    let len = u32::from(len).min(bits);
    if len == 0 {
        return true;
    }
    let shift = bits - len;
    (n >> shift) == (a >> shift)
}

/// The hook that judges packets from source address `a`: the bridge whose
/// subnet holds it (the veth of the port its MAC was learned on, if that
/// veth has the endpoint program), else why none does.
pub fn address_hook(h: &HostNet, a: IpAddr) -> Hook {
    if let Some((i, _, _)) = h.addresses.iter().find(|(_, x, _)| *x == a) {
        return Hook::unjudged(
            "unfiltered",
            format!(
                "{a} is this host's own address (on {i}): the host's own traffic is judged by \
                 no hook (a host-network container is judged by its cgroup: --from CONTAINER)"
            ),
        );
    }
    let Some((iface, _, _)) = h
        .addresses
        .iter()
        .filter(|(_, net, len)| contains(*net, *len, a))
        .max_by_key(|(_, _, len)| *len)
    else {
        return Hook::unjudged(
            "unfiltered",
            format!(
                "no interface of this host has a subnet holding {a}: not a source the filter \
                 judges (a container on a routed veth has no subnet here: --from CONTAINER)"
            ),
        );
    };
    let Some(&bridge) = h.bridges.get(iface) else {
        return Hook::unjudged(
            "unfiltered",
            format!("{a} is in the subnet of {iface}, which is not a bridge the filter judges"),
        );
    };
    if h.attached.get(iface) != Some(&"bridge") {
        return Hook::unjudged(
            "uncovered",
            format!("bridge {iface} is not filtered (egress_filter is not attached to it)"),
        );
    }
    let mac = h
        .neighbours
        .iter()
        .find(|(i, ip, _)| *i == bridge && *ip == a)
        .map(|(_, _, m)| *m);
    let Some(mac) = mac else {
        return Hook::bridge(
            iface,
            Some(format!(
                "the sender's port is not known (no neighbour entry for {a} on {iface}): if it \
                 is a container whose veth has egress_endpoint, that judges it instead, with its \
                 exceptions and budget (--from CONTAINER)"
            )),
        );
    };
    let port = h
        .fdb
        .iter()
        .find(|(b, m, p)| *b == bridge && *m == mac && *p != bridge)
        .and_then(|(_, _, p)| h.names.get(p).map(|n| (n.clone(), *p)));
    match port {
        Some((name, index)) if h.attached.get(&name) == Some(&"endpoint") => {
            Hook::veth(&name, Some(index))
        }
        Some((name, _)) => Hook::bridge(
            iface,
            Some(format!("its port {name} has no egress_endpoint attached")),
        ),
        None => Hook::bridge(
            iface,
            Some(format!(
                "the port {iface} learned {a}'s MAC on is not known (no forwarding entry)"
            )),
        ),
    }
}

/// The client named by `--from` and the hook that judges its connections
/// to `to`: with no client, any container; for an address, the host's
/// bridge whose subnet holds it ([`address_hook`]); for a container's name
/// or id, its coverage as `status` computes it, from the engine that
/// `docker_host` or `DOCKER_HOST` names. Also the client's address of
/// `to`'s family (none for any container, or one without an address of
/// its own: host network, no network).
pub fn client(
    pins: &PinDir,
    from: Option<&str>,
    to: IpAddr,
    docker_host: Option<&str>,
) -> Result<(Option<IpAddr>, Client), Error> {
    if !pins.is_loaded() {
        return Err(maps::not_loaded(pins));
    }
    let Some(from) = from else {
        return Ok((
            None,
            Client {
                container: None,
                hook: Hook::any(),
            },
        ));
    };
    let want_v4 = to.is_ipv4();
    // What is attached, as `status` reads it (links/<ifname> pins, legacy
    // filters): the same reading coverage uses.
    let interfaces = status::read(pins, None)?.interfaces;
    if let Ok(ip) = from.parse::<IpAddr>() {
        if ip.is_ipv4() != want_v4 {
            return Err(ConfigError::new(
                "--from",
                format!("{ip} and {to} are not of one address family"),
            )
            .into());
        }
        let hook = address_hook(&HostNet::read(&interfaces), ip);
        return Ok((
            Some(ip),
            Client {
                container: None,
                hook,
            },
        ));
    }
    let endpoint = DockerEndpoint::from_flags(docker_host, false)?
        .ok_or_else(|| ConfigError::new("--from", "DOCKER_HOST is not a unix socket"))?;
    let rt = crate::kernel::runtime::current_thread()?;
    let engine_error =
        |e: EngineError| ConfigError::new("--from", format!("{e} (engine {})", endpoint.url()));
    let (nets, list) = rt
        .block_on(async {
            let docker = endpoint.connect().await?;
            let nets = networks::list(&docker).await?;
            let list = containers::list(&docker).await?;
            Ok::<_, EngineError>((nets, list))
        })
        .map_err(engine_error)?;
    let Some(info) = list
        .iter()
        .find(|c| c.name == from || c.name == from.trim_start_matches('/'))
        .or_else(|| {
            list.iter()
                .find(|c| from.len() >= 4 && c.id.starts_with(from))
        })
    else {
        return Err(ConfigError::new(
            "--from",
            format!("no running container {from:?} (engine {})", endpoint.url()),
        )
        .into());
    };
    let attached = status::attached(&interfaces, pins);
    let cov = coverage::compute(&list, &nets, &attached, |c| {
        c.pid.map(coverage::host_peers).unwrap_or_default()
    });
    let mine = cov
        .containers
        .iter()
        .find(|c| c.id == info.id)
        .expect("compute covers every container it is given");
    let hook = container_hook(mine, Some(info), &attach::interfaces(), &attached.cgroups);
    let addrs = rt
        .block_on(container_addresses(&endpoint, &info.id))
        .map_err(engine_error)?;
    let addr = match of_family(&addrs, want_v4) {
        Some(ip) => Some(ip),
        // Host network, or no network: it has no address of its own.
        None if matches!(hook.kind, "cgroup" | "none" | "uncovered") => None,
        None => {
            return Err(ConfigError::new(
                "--from",
                format!(
                    "container {from:?} has no {} address",
                    if want_v4 { "IPv4" } else { "IPv6" }
                ),
            )
            .into());
        }
    };
    Ok((
        addr,
        Client {
            container: Some(info.name.clone()),
            hook,
        },
    ))
}

/// The address of `family` among `addrs` (the destination's family).
fn of_family(addrs: &[(IpAddr, String)], want_v4: bool) -> Option<IpAddr> {
    addrs
        .iter()
        .map(|(ip, _)| *ip)
        .find(|ip| ip.is_ipv4() == want_v4)
}

/// A connection to explain: the client's address (unspecified: any
/// container) and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub from: Option<IpAddr>,
    pub to: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

/// Who connects: the container (by name) when it was given as one, and the
/// hook that judges it.
#[derive(Debug, Clone)]
pub struct Client {
    pub container: Option<String>,
    pub hook: Hook,
}

/// The answer, as `explain --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: String,
    /// The verdict counter the packet would count in (`passed`,
    /// `metadata_blocked`, `smtp_allowed`, `smtp_limited`).
    /// `not_judged` when no hook sees the sender (`hook_kind` says why).
    pub verdict: &'static str,
    /// `pass`, `drop` or `reject`; in dry-run, or not judged, `pass`.
    pub action: &'static str,
    /// In dry-run: what the action would be if enforcing; not judged: what
    /// the policy's action would be if a hook saw the sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u16>,
    /// The matching block rule, as `counters` shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The port exception that keeps a blocked destination open for this
    /// connection, with its rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// What a reject answers with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<&'static str>,
    /// The program and hook that judge it, in words.
    pub hook: String,
    /// `veth`, `bridge`, `cgroup`, `none`, `uncovered`, `unfiltered` or `any`.
    pub hook_kind: &'static str,
    /// The interface or cgroup of the hook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Why no hook judges it, or what is not known of the sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_reason: Option<String>,
    /// The container asked about (`--from CONTAINER`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The endpoint whose policy was explained (a veth with its program).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointInfo>,
    /// For a connection attempt to a rate-limited port: the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_bucket: Option<BucketState>,
    pub dry_run: bool,
}

/// A GCRA bucket's state now.
#[derive(Debug, Clone, Serialize)]
pub struct BucketState {
    /// `global`, `per-source`, `per-container`, `own`, `unlimited`, with
    /// whose bucket it is in words.
    pub scope: String,
    /// Whole tokens left (attempts admitted at once from now).
    pub tokens: u64,
    pub burst: u64,
    /// Milliseconds until the next token (0: one is there).
    pub next_token_ms: u64,
}

fn tokens(g: &Gcra, tat: u64, now: u64) -> (u64, u64) {
    if g.emission_ns == 0 {
        return (0, 0);
    }
    let burst = g.burst_window_ns / g.emission_ns;
    let debt = tat.saturating_sub(now);
    let left = g.burst_window_ns.saturating_sub(debt) / g.emission_ns;
    // The next token: when the debt is one emission below the window.
    let next = if left > 0 {
        0
    } else {
        (debt + g.emission_ns).saturating_sub(g.burst_window_ns)
    };
    (left.min(burst), next / 1_000_000)
}

fn v6_key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => v4_mapped(&a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The policy in force at `pins`, as a model of the maps at the kernel's
/// clock now.
fn read_model(pins: &PinDir) -> Result<(PolicyModel, PolicyConfig), Error> {
    let policy = maps::PolicyMaps::open(pins)?;
    let mut v4: Prefixes<4> = BTreeMap::new();
    for item in policy.blocked_v4.iter() {
        let (k, v) = item.map_err(|e| Error::map(BLOCKED_V4, e))?;
        v4.insert((k.prefix_len(), k.data()), v);
    }
    let mut v6: Prefixes<16> = BTreeMap::new();
    for item in policy.blocked_v6.iter() {
        let (k, v) = item.map_err(|e| Error::map(BLOCKED_V6, e))?;
        v6.insert((k.prefix_len(), k.data()), v);
    }
    let config = read_config(&policy.active_config, &policy.policy_config)?;
    let bucket = maps::smtp_bucket(pins)?;
    let mut slots = [0u64; SMTP_GLOBAL_SLOTS as usize];
    for (i, s) in slots.iter_mut().enumerate() {
        *s = bucket
            .get(&(i as u32), 0)
            .map_err(|e| Error::map(SMTP_BUCKET, e))?;
    }
    let mut sources = BTreeMap::new();
    for item in maps::smtp_source_buckets(pins)?.iter() {
        let (k, v) = item.map_err(|e| Error::map(SMTP_SOURCE_BUCKETS, e))?;
        sources.insert(k, v);
    }
    let model = PolicyModel::new(v4, v6, config).with_smtp_state(slots, sources);
    model.set_now(monotonic_ns());
    Ok((model, config))
}

/// An endpoint as the pins hold it: its entry, the rules its exceptions
/// open, the TAT of its own SMTP bucket.
#[derive(Debug, Clone)]
struct EndpointState {
    entry: Option<Endpoint>,
    exceptions: BTreeSet<u16>,
    /// `SMTP_ENDPOINT_BUCKETS[id]` (`None`: no bucket yet, a full one).
    tat: Option<u64>,
}

fn read_endpoint(pins: &PinDir, id: u32) -> Result<EndpointState, Error> {
    let m = maps::EndpointMaps::open(pins)?;
    let entry = match m.endpoints.get(&endpoint_slot(id), 0) {
        Ok(e) if e.id == id => Some(e),
        _ => m.overflow.get(&id, 0).ok(),
    };
    let mut exceptions = BTreeSet::new();
    for k in m.exceptions.keys() {
        let k = k.map_err(|e| Error::map(EXCEPTIONS, e))?;
        if k.endpoint == id {
            exceptions.insert(k.rule);
        }
    }
    let tat = m.buckets.get(&id, 0).ok();
    Ok(EndpointState {
        entry,
        exceptions,
        tat,
    })
}

/// The maps as the hook judging the client reads them: the bridge's view
/// (the model), a veth's (its endpoint's exceptions and budget: like
/// `EndpointMaps` in egress-ebpf/src/view.rs), or the cgroup hooks' (the
/// bucket keyed by cgroup: `CgroupView` in egress-ebpf/src/cgroup.rs).
struct HookView<'m> {
    model: &'m PolicyModel,
    endpoint: Option<&'m EndpointState>,
    /// The cgroup hooks' per-source key.
    key: Option<[u8; 16]>,
    /// The endpoint's own bucket, as the model charges it.
    own_tat: Cell<u64>,
}

impl HookView<'_> {
    fn admit_own(&self, g: &Gcra) -> bool {
        match g.admit(self.own_tat.get(), self.model.now()) {
            Some(next) => {
                self.own_tat.set(next);
                true
            }
            None => false,
        }
    }
}

impl PolicyView for HookView<'_> {
    fn blocked_v4(&self, dst: &[u8; 4]) -> Option<&BlockRule> {
        self.model.blocked_v4(dst)
    }

    fn blocked_v6(&self, dst: &[u8; 16]) -> Option<&BlockRule> {
        self.model.blocked_v6(dst)
    }

    fn config(&self) -> Option<&PolicyConfig> {
        self.model.config()
    }

    fn admit_smtp(&self, gcra: &Gcra, scope: u8, src: &[u8; 16]) -> bool {
        if let Some(e) = self.endpoint {
            if let Some(entry) = &e.entry {
                if entry.has(ENDPOINT_SMTP_UNLIMITED) {
                    return true;
                }
                if entry.has(ENDPOINT_OWN_SMTP) {
                    return self.admit_own(&Gcra {
                        emission_ns: entry.smtp_emission_ns,
                        burst_window_ns: entry.smtp_burst_window_ns,
                    });
                }
            }
            if scope == SCOPE_PER_CONTAINER {
                return self.admit_own(gcra);
            }
        }
        match &self.key {
            Some(key) => self.model.admit_smtp(gcra, scope, key),
            None => self.model.admit_smtp(gcra, scope, src),
        }
    }

    fn excepted(&self, rule: u16) -> bool {
        self.endpoint.is_some_and(|e| {
            e.entry.is_some_and(|x| x.has(ENDPOINT_EXCEPTED)) && e.exceptions.contains(&rule)
        })
    }
}

/// The bucket a connection attempt would be charged to, as `view` charges
/// it; `src` is the per-source key (the source address, or the cgroup's).
fn bucket_state(
    pins: &PinDir,
    c: &PolicyConfig,
    src: [u8; 16],
    view: &HookView,
    who: &str,
) -> Result<BucketState, Error> {
    let g = Gcra {
        emission_ns: c.emission_ns,
        burst_window_ns: c.burst_window_ns,
    };
    let slots = maps::smtp_bucket(pins)?;
    let slot = |i: u32| slots.get(&i, 0).map_err(|e| Error::map(SMTP_BUCKET, e));
    let own = |scope: String, g: Gcra, tat: Option<u64>| {
        let (scope, tat) = match tat {
            Some(t) => (scope, t),
            None => (format!("{scope}, a new, full bucket"), 0),
        };
        let (left, next) = tokens(&g, tat, monotonic_ns());
        BucketState {
            scope,
            tokens: left,
            burst: g.burst_window_ns.checked_div(g.emission_ns).unwrap_or(0),
            next_token_ms: next,
        }
    };
    if let Some(e) = view.endpoint {
        if let Some(entry) = &e.entry {
            if entry.has(ENDPOINT_SMTP_UNLIMITED) {
                return Ok(BucketState {
                    scope: format!("unlimited (endpoint {who}: never limited)"),
                    tokens: 0,
                    burst: 0,
                    next_token_ms: 0,
                });
            }
            if entry.has(ENDPOINT_OWN_SMTP) {
                let g = Gcra {
                    emission_ns: entry.smtp_emission_ns,
                    burst_window_ns: entry.smtp_burst_window_ns,
                };
                return Ok(own(format!("own (endpoint {who}'s budget)"), g, e.tat));
            }
        }
        if c.scope == SCOPE_PER_CONTAINER {
            return Ok(own(format!("per-container (endpoint {who})"), g, e.tat));
        }
    }
    let keyed = if view.key.is_some() {
        "by cgroup"
    } else {
        "by source address"
    };
    let (scope, tat) = if c.scope == SCOPE_PER_SOURCE || c.scope == SCOPE_PER_CONTAINER {
        let name = if c.scope == SCOPE_PER_SOURCE {
            format!("per-source ({keyed})")
        } else {
            format!("per-container (falls back to {keyed}: no endpoint)")
        };
        let table = maps::smtp_source_buckets(pins)?;
        match table.get(&src, 0) {
            Ok(tat) => (name, tat),
            Err(_) => {
                let full =
                    table.keys().count() as u32 >= egress_ebpf_common::maps::SMTP_SOURCE_CAPACITY;
                if full {
                    (
                        format!("{name}, overflow: the table is full"),
                        slot(SMTP_OVERFLOW_SLOT)?,
                    )
                } else {
                    (format!("{name}, a new, full bucket"), 0)
                }
            }
        }
    } else {
        ("global".to_string(), slot(SMTP_GLOBAL_SLOT)?)
    };
    let (left, next) = tokens(&g, tat, monotonic_ns());
    Ok(BucketState {
        scope,
        tokens: left,
        burst: g.burst_window_ns.checked_div(g.emission_ns).unwrap_or(0),
        next_token_ms: next,
    })
}

/// The longest-prefix entry for `to`, as the kernel's lookup finds it.
fn entry(model: &PolicyModel, to: IpAddr) -> Option<&BlockRule> {
    match to {
        IpAddr::V4(a) => model.blocked_v4(&a.octets()),
        IpAddr::V6(a) => model.blocked_v6(&a.octets()),
    }
}

/// Explains `q` from `client` against the filter at `pins`.
pub fn explain(pins: &PinDir, q: &Query, client: &Client) -> Result<Explanation, Error> {
    if !pins.is_loaded() {
        return Err(maps::not_loaded(pins));
    }
    let hook = &client.hook;
    let (model, config) = read_model(pins)?;
    let policy = maps::PolicyMaps::open(pins)?;
    let texts = rule_texts(&policy)?;
    let from = q.from.unwrap_or(match q.to {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    // The veth's endpoint: its entry, exceptions and bucket, as the veth
    // program reads them.
    let endpoint = match (hook.kind, hook.ifindex) {
        ("veth", Some(id)) => Some(read_endpoint(pins, id)?),
        _ => None,
    };
    let key = hook.cgroup_id.map(cgroup_bucket_key);
    let view = HookView {
        model: &model,
        endpoint: endpoint.as_ref(),
        key,
        own_tat: Cell::new(endpoint.as_ref().and_then(|e| e.tat).unwrap_or(0)),
    };
    let parsed = first_packet(from, q.to, q.protocol, q.port);
    let d = judge(&view, &parsed);
    let dry_run = config.valid != 0 && config.dry_run != 0;
    let judged = hook.judges();
    let enforced = |a: Action| match a {
        Action::Pass => "pass",
        Action::Drop => "drop",
        Action::Reject => "reject",
    };
    // In dry-run the decision passes: what it would do comes from the
    // rule's (or the limit's) own action. Not judged: what it would do if a
    // hook saw the sender.
    let would = if (dry_run || !judged) && d.verdict.drops() {
        let rejects = match texts.get(&d.rule) {
            Some(t) => t.action == "reject",
            None => config.smtp_over_limit == OVER_LIMIT_REJECT,
        };
        Some(if rejects { "reject" } else { "drop" })
    } else {
        None
    };
    let rejects = judged && (d.action == Action::Reject || would == Some("reject"));
    let reply = rejects.then_some(match (hook.kind, q.protocol, q.to) {
        ("cgroup", _, _) => "EPERM from connect()/sendto() (no packet is sent)",
        (_, Protocol::Tcp, _) => "TCP reset",
        (_, _, IpAddr::V4(_)) => "ICMP port unreachable",
        (_, _, IpAddr::V6(_)) => "ICMPv6 port unreachable",
    });
    let rule_dest = |id: u16| {
        texts
            .get(&id)
            .map(|t| t.destination.clone())
            .unwrap_or_default()
    };
    let port_exception = entry(&model, q.to)
        .filter(|_| !d.verdict.drops())
        .and_then(|e| e.excepts(q.protocol.number(), q.port))
        .map(|m| {
            format!(
                "{}/{} is excepted from rule {} ({})",
                q.protocol,
                q.port,
                m.rule_id,
                rule_dest(m.rule_id)
            )
        });
    // An endpoint's exception: a rule matched, and the endpoint may pass.
    let endpoint_exception =
        (d.verdict == egress_ebpf_common::counters::CounterId::Excepted).then(|| {
            let rule = entry(&model, q.to)
                .map(|e| e.matching_rule(q.protocol.number(), parsed.transport.dport))
                .filter(|h| h.is_hit())
                .map(|h| h.rule)
                .unwrap_or(NO_RULE);
            format!(
                "the endpoint {}'s exception opens rule {rule} ({})",
                hook.via.as_deref().unwrap_or("?"),
                rule_dest(rule)
            )
        });
    let exception = endpoint_exception.or(port_exception);
    let who = hook.via.clone().unwrap_or_default();
    let smtp_bucket = if judged
        && config.valid != 0
        && q.protocol == Protocol::Tcp
        && config.is_smtp_port(q.port)
        && d.rule == NO_RULE
    {
        Some(bucket_state(
            pins,
            &config,
            key.unwrap_or(v6_key(from)),
            &view,
            &who,
        )?)
    } else {
        None
    };
    let endpoint_info = match hook.ifindex {
        Some(id) if hook.kind == "veth" => {
            let names = crate::kernel::attach::interfaces()
                .into_iter()
                .map(|(n, i)| (i, n))
                .collect();
            EndpointLookup::open(pins)?.get(id, &names)
        }
        _ => None,
    };
    let show = |a: IpAddr| match a {
        a if a.is_unspecified() => "any".to_string(),
        a => a.to_string(),
    };
    Ok(Explanation {
        from: show(from),
        to: q.to.to_string(),
        port: q.port,
        protocol: q.protocol.to_string(),
        verdict: if judged {
            d.verdict.name()
        } else {
            "not_judged"
        },
        action: if judged { enforced(d.action) } else { "pass" },
        would,
        rule_id: (d.rule != NO_RULE).then_some(d.rule),
        rule: texts.get(&d.rule).map(|t| {
            if t.except.is_empty() {
                format!("{} {}", t.destination, t.action)
            } else {
                format!(
                    "{} except {} {}",
                    t.destination,
                    t.except.join(","),
                    t.action
                )
            }
        }),
        exception,
        reply,
        hook: hook.text.clone(),
        hook_kind: hook.kind,
        via: hook.via.clone(),
        hook_reason: hook.reason.clone(),
        container: client.container.clone(),
        endpoint: endpoint_info,
        smtp_bucket,
        dry_run,
    })
}

/// The human-readable form.
pub fn render(e: &Explanation) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let to = if e.to.contains(':') {
        format!("[{}]:{}/{}", e.to, e.port, e.protocol)
    } else {
        format!("{}:{}/{}", e.to, e.port, e.protocol)
    };
    match &e.container {
        Some(c) => {
            let _ = writeln!(t, "from {c} ({}) to {to}", e.from);
        }
        None => {
            let _ = writeln!(t, "from {} to {to}", e.from);
        }
    }
    let action = match (e.verdict, e.action, e.would) {
        ("not_judged", a, Some(w)) => format!(
            "{} (no hook sees it; the policy says {w})",
            a.to_uppercase()
        ),
        ("not_judged", a, None) => format!("{} (no hook sees it)", a.to_uppercase()),
        (_, a, Some(w)) => format!("{a} (dry-run; enforcing: {w})"),
        (_, a, None) => a.to_uppercase(),
    };
    let _ = writeln!(t, "  verdict:   {} -> {action}", e.verdict);
    if let Some(r) = &e.rule {
        let _ = writeln!(t, "  rule:      {} {r}", e.rule_id.unwrap_or(NO_RULE));
    }
    if let Some(x) = &e.exception {
        let _ = writeln!(t, "  exception: {x}");
    }
    if let Some(r) = e.reply {
        let _ = writeln!(t, "  reply:     {r} (within the reply budget)");
    }
    if let Some(b) = &e.smtp_bucket {
        let _ = writeln!(
            t,
            "  bucket:    {} {}/{} tokens, next in {} ms",
            b.scope, b.tokens, b.burst, b.next_token_ms
        );
    }
    let _ = writeln!(t, "  hook:      {}", e.hook);
    if let Some(r) = &e.hook_reason {
        let _ = writeln!(t, "             {r}");
    }
    if let Some(p) = &e.endpoint {
        let _ = writeln!(
            t,
            "  endpoint:  {} (ifindex {}{}), exceptions: {}, SMTP budget: {}",
            p.veth,
            p.ifindex,
            p.container
                .as_ref()
                .map(|c| format!(", container {}", c.name))
                .unwrap_or_default(),
            if p.excepted { "yes" } else { "none" },
            p.smtp
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_a_tat() {
        let g = Gcra {
            emission_ns: 1_000_000_000,
            burst_window_ns: 5_000_000_000,
        };
        assert_eq!(tokens(&g, 0, 10_000_000_000), (5, 0), "never used: full");
        assert_eq!(tokens(&g, 12_000_000_000, 10_000_000_000), (3, 0));
        // Spent: the debt is the whole window; the next token in 1 s.
        assert_eq!(tokens(&g, 15_000_000_000, 10_000_000_000), (0, 1000));
        assert_eq!(
            tokens(
                &Gcra {
                    emission_ns: 0,
                    burst_window_ns: 0
                },
                0,
                1
            ),
            (0, 0)
        );
    }

    /// The cgroup hook's text names the hooks whose links are live: the
    /// sendmsg pair on a kernel that refuses cgroup_skb.
    #[test]
    fn a_host_network_container_meets_the_live_cgroup_hooks() {
        use egress_ebpf_common::hook::Hook as H;
        let c = ContainerCoverage {
            name: "agent".into(),
            id: "0123456789ab".into(),
            network_mode: "host".into(),
            networks: vec![],
            hook: HookKind::Cgroup,
            via: vec!["/docker".into()],
            reason: None,
            caveats: vec![],
            partly_covered: vec![],
        };
        let attachment = |live: Vec<H>| CgroupAttachment {
            cgroup: "docker".into(),
            live,
            stale: vec![],
            program_ids: vec![],
        };
        let older = [
            attachment(vec![H::Connect4, H::Connect6, H::Sendmsg4, H::Sendmsg6]),
            // Another cgroup's links are not this container's.
            CgroupAttachment {
                cgroup: "system.slice".into(),
                ..attachment(vec![H::CgroupSkb])
            },
        ];
        let h = container_hook(&c, None, &[], &older);
        assert_eq!(h.kind, "cgroup");
        assert_eq!(
            h.text,
            "cgroup / (cgroup/connect4, cgroup/connect6, cgroup/sendmsg4, cgroup/sendmsg6 \
             attached at /docker)"
        );
        let newer = [attachment(vec![H::Connect4, H::Connect6, H::CgroupSkb])];
        let h = container_hook(&c, None, &[], &newer);
        assert!(h.text.contains("cgroup_skb/egress"), "{}", h.text);
        assert!(!h.text.contains("sendmsg"), "{}", h.text);
    }

    fn host() -> HostNet {
        let mac = [2, 0x42, 0xac, 0x11, 0, 2];
        HostNet {
            addresses: vec![
                ("docker0".into(), "172.17.0.1".parse().unwrap(), 16),
                ("br-plain".into(), "172.31.0.1".parse().unwrap(), 24),
                ("eth0".into(), "10.0.0.5".parse().unwrap(), 24),
            ],
            bridges: [("docker0".to_string(), 3), ("br-plain".into(), 9)].into(),
            attached: [
                ("docker0".to_string(), "bridge"),
                ("vethc0".into(), "endpoint"),
            ]
            .into(),
            neighbours: vec![
                (3, "172.17.0.2".parse().unwrap(), mac),
                (
                    3,
                    "172.17.0.3".parse().unwrap(),
                    [2, 0x42, 0xac, 0x11, 0, 3],
                ),
            ],
            fdb: vec![(3, mac, 7), (3, [2, 0x42, 0xac, 0x11, 0, 3], 8)],
            names: [
                (3, "docker0".to_string()),
                (7, "vethc0".into()),
                (8, "vethc1".into()),
            ]
            .into(),
        }
    }

    #[test]
    fn an_address_is_judged_where_its_packets_enter() {
        let h = host();
        let hook = |a: &str| address_hook(&h, a.parse().unwrap());
        // Its MAC was learned on a port with the endpoint program.
        let v = hook("172.17.0.2");
        assert_eq!(
            (v.kind, v.via.as_deref(), v.ifindex),
            ("veth", Some("vethc0"), Some(7))
        );
        // A port without it: the bridge, by source address.
        let b = hook("172.17.0.3");
        assert_eq!((b.kind, b.via.as_deref()), ("bridge", Some("docker0")));
        assert!(b.reason.as_deref().unwrap().contains("vethc1"));
        // Never seen: the bridge, and it says what it does not know.
        let u = hook("172.17.0.9");
        assert_eq!(u.kind, "bridge");
        assert!(u.reason.unwrap().contains("no neighbour entry"));
        // A bridge without the filter; not a bridge; no subnet; the host.
        assert_eq!(hook("172.31.0.7").kind, "uncovered");
        assert_eq!(hook("10.0.0.9").kind, "unfiltered");
        assert!(hook("192.0.2.1").reason.unwrap().contains("no interface"));
        assert!(hook("172.17.0.1").reason.unwrap().contains("own address"));
        assert!(!hook("10.0.0.9").judges() && v.judges() && b.judges());
    }

    #[test]
    fn subnets_hold_what_their_prefix_says() {
        let n = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(contains(n("172.17.0.1"), 16, n("172.17.255.1")));
        assert!(!contains(n("172.17.0.1"), 16, n("172.18.0.1")));
        assert!(contains(n("fd00:dead::1"), 64, n("fd00:dead::2")));
        assert!(!contains(n("fd00:dead::1"), 64, n("172.17.0.1")));
        assert!(contains(n("0.0.0.0"), 0, n("8.8.8.8")));
        assert_eq!(prefix_len(&[255, 255, 240, 0]), 20);
    }
}
