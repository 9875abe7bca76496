//! Endpoints: the program on each container's veth, and its entry in the
//! endpoint maps (docs/design.md, Endpoints).
//!
//! For each veth that is a port of a filtered bridge: write its entry
//! (counters slot, container, exceptions, SMTP budget) first, then attach
//! `egress_endpoint` to its ingress with TCX, pinned at `links/<veth>` so it
//! outlives the loader. Until then the bridge program judges its packets
//! (the backstop); once attached, the veth program judges and hands off, so
//! no packet is judged twice and none goes unjudged in between. A veth that
//! goes away takes its entry, exceptions, bucket and counters with it.
//!
//! Exceptions follow the engine: an endpoint gets those whose label its
//! container carries, as soon as the engine reports the container running,
//! and loses them when it stops. Without an engine they stay closed. The
//! entries are pinned: across a loader restart the kernel keeps applying
//! them, and the new loader keeps them until its engine has listed the
//! containers, provided the policy that wrote them is the one in force (a
//! tag in each entry says which).

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    sync::Arc,
};

use aya::maps::PerCpuValues;
use egress_ebpf_common::{
    bucket::Gcra,
    counters::IfaceCounters,
    endpoint::{
        CONTAINER_ID_LEN, CONTAINER_NAME_LEN, ENDPOINT_CONTAINER_KNOWN, ENDPOINT_EXCEPTED,
        ENDPOINT_OWN_SMTP, ENDPOINT_SLOTS, ENDPOINT_SMTP_UNLIMITED, Endpoint, ExceptionKey,
        NO_SLOT, SLOT_RESERVED, endpoint_slot,
    },
    maps::{ENDPOINT_COUNTERS, ENDPOINT_OVERFLOW, ENDPOINTS, EXCEPTIONS},
};

use crate::{
    endpoint::{
        engine::{DockerIdentity, RunningContainer},
        veth::Veth,
    },
    error::Error,
    kernel::{maps::EndpointMaps, netlink, pins::PinDir},
    policy::{
        Policy,
        values::{Exception, ExceptionSmtp},
    },
};

/// One endpoint this loader keeps (or found pinned).
#[derive(Debug, Clone)]
pub(super) struct Kept {
    pub(super) entry: Endpoint,
    /// In `ENDPOINT_OVERFLOW` rather than its `ENDPOINTS` slot.
    pub(super) overflow: bool,
    /// Its `EXCEPTIONS` keys' rules.
    pub(super) rules: BTreeSet<u16>,
    /// Whether its program is attached (by this loader, or adopted).
    pub(super) attached: bool,
    /// Its veth's name, once this loader saw it (its link's pin).
    pub(super) name: Option<String>,
}

/// The endpoint layer's state in `run`.
pub struct Endpoints {
    maps: EndpointMaps,
    /// By endpoint id (veth ifindex).
    pub(super) kept: HashMap<u32, Kept>,
    /// Owner of each `ENDPOINTS` slot (0: free, `SLOT_RESERVED`: the counters
    /// of an overflow endpoint).
    owners: Vec<u32>,
    /// Network namespace id of each running container, as this namespace
    /// numbers it (cached: the sandbox is opened once).
    netns_ids: HashMap<String, Option<i32>>,
    pub(super) engine: Option<Arc<DockerIdentity>>,
    pub(super) said_closed: bool,
}

fn fnv(bytes: &[u8], mut h: u32) -> u32 {
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Which exception policy wrote an entry: the block list and the
/// exceptions (rule ids are positions in the block list).
pub(super) fn policy_tag(policy: &Policy) -> u32 {
    let text = format!("{:?}{:?}", policy.blocks, policy.exceptions);
    fnv(text.as_bytes(), 0x811c_9dc5)
}

fn text_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    // NUL padded; cut on a char boundary below N.
    let mut end = s.len().min(N - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

/// The endpoint entry and the exceptions of one veth, from its container
/// (if known) and the policy.
pub(super) fn desired(
    veth: &Veth,
    container: Option<&RunningContainer>,
    policy: &Policy,
) -> (Endpoint, BTreeSet<u16>) {
    let mut e = Endpoint::empty();
    e.id = veth.ifindex;
    e._pad = policy_tag(policy);
    e.bridge_mac = veth.bridge_mac;
    let mut rules = BTreeSet::new();
    let Some(c) = container else {
        return (e, rules);
    };
    e.flags |= ENDPOINT_CONTAINER_KNOWN;
    e.container_id = text_field::<CONTAINER_ID_LEN>(&c.id);
    e.container_name = text_field::<CONTAINER_NAME_LEN>(&c.name);
    let matching: Vec<&Exception> = policy
        .exceptions
        .iter()
        .filter(|x| x.label.matches(&c.labels))
        .collect();
    for x in &matching {
        rules.extend(x.rules.iter().copied());
    }
    if !rules.is_empty() {
        e.flags |= ENDPOINT_EXCEPTED;
    }
    // The first matching exception that sets an SMTP budget gives it.
    match matching
        .iter()
        .map(|x| x.smtp)
        .find(|s| *s != ExceptionSmtp::Shared)
    {
        Some(ExceptionSmtp::Unlimited) => e.flags |= ENDPOINT_SMTP_UNLIMITED,
        Some(ExceptionSmtp::Own { rate, burst }) => {
            if let Some(g) = Gcra::new(rate.count, rate.period.nanos(), burst as u64) {
                e.flags |= ENDPOINT_OWN_SMTP;
                e.smtp_emission_ns = g.emission_ns;
                e.smtp_burst_window_ns = g.burst_window_ns;
            }
        }
        _ => {}
    }
    (e, rules)
}

impl Endpoints {
    /// Opens the endpoint maps and reads what a previous loader left there.
    pub fn open(pins: &PinDir, engine: Option<Arc<DockerIdentity>>) -> Result<Self, Error> {
        let maps = EndpointMaps::open(pins)?;
        let mut owners = vec![0u32; ENDPOINT_SLOTS as usize];
        let mut kept: HashMap<u32, Kept> = HashMap::new();
        for (slot, item) in maps.endpoints.iter().enumerate() {
            let e = item.map_err(|e| Error::map(ENDPOINTS, e))?;
            owners[slot] = e.id;
            if e.id != 0 && e.id != SLOT_RESERVED {
                kept.insert(
                    e.id,
                    Kept {
                        entry: e,
                        overflow: false,
                        rules: BTreeSet::new(),
                        attached: false,
                        name: None,
                    },
                );
            }
        }
        for item in maps.overflow.iter() {
            let (id, e) = item.map_err(|e| Error::map(ENDPOINT_OVERFLOW, e))?;
            kept.insert(
                id,
                Kept {
                    entry: e,
                    overflow: true,
                    rules: BTreeSet::new(),
                    attached: false,
                    name: None,
                },
            );
        }
        for key in maps.exceptions.keys() {
            let key = key.map_err(|e| Error::map(EXCEPTIONS, e))?;
            if let Some(k) = kept.get_mut(&key.endpoint) {
                k.rules.insert(key.rule);
            }
        }
        Ok(Self {
            maps,
            kept,
            owners,
            netns_ids: HashMap::new(),
            engine,
            said_closed: false,
        })
    }

    /// The running containers by the namespace id of their network
    /// namespace (as this namespace numbers it); `None` when exceptions
    /// cannot be decided yet (no engine, or none listed).
    /// `wanted`: the veths' peer namespace ids; a container whose namespace
    /// had no id when last asked is asked again while one of them is not
    /// matched (the id is assigned when a link between the namespaces is
    /// first reported).
    pub(super) fn containers_by_netns(
        &mut self,
        wanted: &[i32],
    ) -> Option<HashMap<i32, RunningContainer>> {
        let engine = self.engine.as_ref()?;
        if !engine.has_listed() {
            return None;
        }
        let running = engine.running();
        self.netns_ids.retain(|id, _| running.contains_key(id));
        let known: Vec<i32> = self.netns_ids.values().flatten().copied().collect();
        let retry = wanted.iter().any(|w| !known.contains(w));
        let mut out = HashMap::new();
        for (id, c) in running {
            let nsid = match self.netns_ids.get(&id) {
                Some(Some(n)) => Some(*n),
                Some(None) if !retry => None,
                _ => {
                    let n = c
                        .netns
                        .as_ref()
                        .and_then(|p| File::open(p).ok())
                        .and_then(|f| netlink::netns_id(&f).ok().flatten());
                    // Unassigned until a link between the namespaces is
                    // reported: asked again next time.
                    self.netns_ids.insert(id.clone(), n);
                    n
                }
            };
            if let Some(n) = nsid {
                out.insert(n, c);
            }
        }
        Some(out)
    }

    pub(super) fn write_entry(
        &mut self,
        id: u32,
        k: &mut Kept,
        mut entry: Endpoint,
    ) -> Result<(), Error> {
        let direct = endpoint_slot(id) as usize;
        if k.entry.id == id {
            // In the maps already: same place, same counters slot.
            entry.slot = k.entry.slot;
        } else {
            // The direct slot when free, else (a collision with another
            // live endpoint) the overflow table, with a free slot reserved
            // for its counters.
            k.overflow = !(self.owners[direct] == 0 || self.owners[direct] == id);
            entry.slot = if !k.overflow {
                direct as u32
            } else {
                match self.owners.iter().position(|o| *o == 0) {
                    Some(free) => free as u32,
                    None => NO_SLOT,
                }
            };
            if entry.slot != NO_SLOT {
                self.zero_counters(entry.slot)?;
            }
        }
        if k.overflow {
            if entry.slot != NO_SLOT && self.owners[entry.slot as usize] != SLOT_RESERVED {
                self.owners[entry.slot as usize] = SLOT_RESERVED;
                let mut reserved = Endpoint::empty();
                reserved.id = SLOT_RESERVED;
                self.maps
                    .endpoints
                    .set(entry.slot, reserved, 0)
                    .map_err(|e| Error::map(ENDPOINTS, e))?;
            }
            self.maps
                .overflow
                .insert(id, entry, 0)
                .map_err(|e| Error::map(ENDPOINT_OVERFLOW, e))?;
        } else {
            self.owners[direct] = id;
            self.maps
                .endpoints
                .set(direct as u32, entry, 0)
                .map_err(|e| Error::map(ENDPOINTS, e))?;
        }
        k.entry = entry;
        Ok(())
    }

    fn zero_counters(&mut self, slot: u32) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Io(e))?;
        let zeros =
            PerCpuValues::try_from(vec![IfaceCounters::default(); cpus]).map_err(Error::Io)?;
        self.maps
            .counters
            .set(slot, zeros, 0)
            .map_err(|e| Error::map(ENDPOINT_COUNTERS, e))
    }

    /// `EXCEPTIONS` of endpoint `id` to `want`: added before removed.
    pub(super) fn sync_exceptions(
        &mut self,
        id: u32,
        have: &BTreeSet<u16>,
        want: &BTreeSet<u16>,
    ) -> Result<(), Error> {
        for &rule in want.difference(have) {
            let key = ExceptionKey {
                endpoint: id,
                rule,
                _pad: 0,
            };
            self.maps
                .exceptions
                .insert(key, 1, 0)
                .map_err(|e| Error::map(EXCEPTIONS, e))?;
        }
        for &rule in have.difference(want) {
            let key = ExceptionKey {
                endpoint: id,
                rule,
                _pad: 0,
            };
            let _ = self.maps.exceptions.remove(&key);
        }
        Ok(())
    }

    /// Removes what endpoint `id` had in the maps (its program is already
    /// detached, or its veth is gone).
    pub(super) fn forget(&mut self, id: u32, k: &Kept) {
        let _ = self.sync_exceptions(id, &k.rules, &BTreeSet::new());
        let _ = self.maps.buckets.remove(&id);
        if k.overflow {
            let _ = self.maps.overflow.remove(&id);
            if k.entry.slot != NO_SLOT && self.owners[k.entry.slot as usize] == SLOT_RESERVED {
                self.owners[k.entry.slot as usize] = 0;
                let _ = self.maps.endpoints.set(k.entry.slot, Endpoint::empty(), 0);
            }
        } else {
            let slot = endpoint_slot(id) as usize;
            if self.owners[slot] == id {
                self.owners[slot] = 0;
                let _ = self.maps.endpoints.set(slot as u32, Endpoint::empty(), 0);
            }
        }
    }

    /// Deletes per-endpoint buckets whose endpoint is not kept (left by a
    /// loader that died between a veth's removal and its clean-up).
    pub(super) fn sweep_buckets(&mut self) {
        let stale: Vec<u32> = self
            .maps
            .buckets
            .keys()
            .flatten()
            .filter(|id| !self.kept.contains_key(id))
            .collect();
        for id in stale {
            let _ = self.maps.buckets.remove(&id);
        }
    }
}
