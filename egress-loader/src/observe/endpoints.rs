//! The endpoints as the pins hold them: each attached container veth, its
//! container (when the engine named it), whether an exception or an SMTP
//! budget of its own applies, and its verdict counters. Only live endpoints
//! are in the maps (the loader removes a veth's entry when it goes), so the
//! per-endpoint series stay bounded by the containers that exist.

use std::collections::BTreeMap;

use egress_ebpf_common::{
    counters::IfaceCounters,
    endpoint::{
        ENDPOINT_CONTAINER_KNOWN, ENDPOINT_EXCEPTED, ENDPOINT_OWN_SMTP, ENDPOINT_SMTP_UNLIMITED,
        Endpoint, NO_SLOT, SLOT_RESERVED, endpoint_slot,
    },
    maps::{ENDPOINT_COUNTERS, ENDPOINT_OVERFLOW, ENDPOINTS},
};
use serde::Serialize;

use crate::{
    error::Error,
    kernel::{attach, maps::EndpointMaps, pins::PinDir},
};

/// The NUL-padded text of an entry's field.
pub fn field_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The container behind an endpoint, as the engine named it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EndpointContainer {
    pub id: String,
    pub name: String,
}

/// One endpoint: a container's veth.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The veth's name now (`ifindex N` if it is gone).
    pub veth: String,
    pub ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<EndpointContainer>,
    /// An exception opens some blocked destinations to it.
    pub excepted: bool,
    /// `shared`, `own` or `unlimited`.
    pub smtp: &'static str,
}

impl EndpointInfo {
    fn new(e: &Endpoint, names: &BTreeMap<u32, String>) -> Self {
        Self {
            veth: names
                .get(&e.id)
                .cloned()
                .unwrap_or_else(|| format!("ifindex {}", e.id)),
            ifindex: e.id,
            container: e.has(ENDPOINT_CONTAINER_KNOWN).then(|| EndpointContainer {
                id: field_text(&e.container_id),
                name: field_text(&e.container_name),
            }),
            excepted: e.has(ENDPOINT_EXCEPTED),
            smtp: if e.has(ENDPOINT_SMTP_UNLIMITED) {
                "unlimited"
            } else if e.has(ENDPOINT_OWN_SMTP) {
                "own"
            } else {
                "shared"
            },
        }
    }
}

fn names() -> BTreeMap<u32, String> {
    attach::interfaces()
        .into_iter()
        .map(|(n, i)| (i, n))
        .collect()
}

/// Every endpoint entry, with its counters summed over CPUs (zeros for one
/// without a counters slot), sorted by veth name.
pub fn read(pins: &PinDir) -> Result<Vec<(EndpointInfo, IfaceCounters)>, Error> {
    let maps = EndpointMaps::open(pins)?;
    let names = names();
    let mut entries: Vec<Endpoint> = Vec::new();
    for item in maps.endpoints.iter() {
        let e = item.map_err(|e| Error::map(ENDPOINTS, e))?;
        if e.id != 0 && e.id != SLOT_RESERVED {
            entries.push(e);
        }
    }
    for item in maps.overflow.iter() {
        let (_, e) = item.map_err(|e| Error::map(ENDPOINT_OVERFLOW, e))?;
        entries.push(e);
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut total = IfaceCounters::default();
        if e.slot != NO_SLOT {
            let values = maps
                .counters
                .get(&e.slot, 0)
                .map_err(|err| Error::map(ENDPOINT_COUNTERS, err))?;
            for v in values.iter() {
                for (t, c) in total.by_verdict.iter_mut().zip(&v.by_verdict) {
                    t.add(c);
                }
            }
        }
        out.push((EndpointInfo::new(&e, &names), total));
    }
    out.sort_by(|a, b| a.0.veth.cmp(&b.0.veth));
    Ok(out)
}

/// Looks endpoints up by id, for the event decoder.
pub struct EndpointLookup {
    maps: EndpointMaps,
}

impl EndpointLookup {
    pub fn open(pins: &PinDir) -> Result<Self, Error> {
        Ok(Self {
            maps: EndpointMaps::open(pins)?,
        })
    }

    /// The entry of endpoint `id` (its slot, else the overflow table), as
    /// it is now; the veth named from `names` (ifindex -> name).
    pub fn get(
        &self,
        id: u32,
        names: &std::collections::HashMap<u32, String>,
    ) -> Option<EndpointInfo> {
        let e = match self.maps.endpoints.get(&endpoint_slot(id), 0) {
            Ok(e) if e.id == id => e,
            _ => self.maps.overflow.get(&id, 0).ok()?,
        };
        let names: BTreeMap<u32, String> = names
            .get(&id)
            .map(|n| (id, n.clone()))
            .into_iter()
            .collect();
        Some(EndpointInfo::new(&e, &names))
    }
}
