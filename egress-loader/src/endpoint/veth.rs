//! The veth inventory: which links of this namespace are containers' veths
//! on a bridge the filter covers. Each is an endpoint: one veth, one
//! container, and an identity the container cannot forge (docs/design.md,
//! Endpoints).

use std::collections::HashMap;

use crate::kernel::netlink::{self, Link};

/// Name prefix of `verify`'s backstop probe port: left to the bridge
/// program on purpose, so that `verify` can prove the backstop (its
/// endpoint probe, `egve...`, is attached like any container's veth).
pub const VERIFY_BACKSTOP_PREFIX: &str = "egvb";

/// The host side of a container's veth, a port of a filtered bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    pub name: String,
    pub ifindex: u32,
    /// The bridge it is a port of.
    pub bridge: String,
    /// Its peer's namespace as this one numbers it (`IFLA_LINK_NETNSID`):
    /// how the container behind it is found. `None`: the peer is in this
    /// namespace (not a container's).
    pub peer_netnsid: Option<i32>,
    /// The bridge's MAC address (zero when unknown): frames a container
    /// sends to it go up to the host and are judged at the veth.
    pub bridge_mac: [u8; 6],
}

/// The veths of `links` that are ports of one of `bridges` (name ->
/// ifindex: the bridges the filter is attached to).
pub fn bridge_ports(links: &[Link], bridges: &HashMap<String, u32>) -> Vec<Veth> {
    let by_index: HashMap<u32, &str> = bridges.iter().map(|(n, i)| (*i, n.as_str())).collect();
    let macs: HashMap<u32, [u8; 6]> = links
        .iter()
        .filter_map(|l| Some((l.index, l.mac?)))
        .collect();
    let mut out: Vec<Veth> = links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .filter(|l| !l.name.starts_with(VERIFY_BACKSTOP_PREFIX))
        .filter_map(|l| {
            let bridge = by_index.get(&l.master?)?;
            Some(Veth {
                name: l.name.clone(),
                ifindex: l.index,
                bridge: (*bridge).to_owned(),
                peer_netnsid: l.link_netnsid,
                bridge_mac: macs.get(&l.master?).copied().unwrap_or([0; 6]),
            })
        })
        .collect();
    out.sort_by_key(|v| v.ifindex);
    out
}

/// The container veths on `bridges` now.
pub fn inventory(bridges: &HashMap<String, u32>) -> std::io::Result<Vec<Veth>> {
    Ok(bridge_ports(&netlink::dump_links()?, bridges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, index: u32, kind: &str, master: Option<u32>, ns: Option<i32>) -> Link {
        Link {
            name: name.into(),
            index,
            kind: Some(kind.into()),
            master,
            link_netnsid: ns,
            mac: Some([0x02, 0, 0, 0, 0, index as u8]),
            link_type: 1,
        }
    }

    #[test]
    fn only_veth_ports_of_filtered_bridges() {
        let links = [
            link("docker0", 3, "bridge", None, None),
            link("br-x", 4, "bridge", None, None),
            link("veth1", 10, "veth", Some(3), Some(0)),
            // A port of a bridge the filter does not cover.
            link("veth2", 11, "veth", Some(4), Some(1)),
            // A veth on no bridge (routed, or the uplink).
            link("up0", 12, "veth", None, Some(2)),
            // Another kind of port.
            link("tap0", 13, "tun", Some(3), None),
            // verify's backstop probe.
            link("egvb1x0", 14, "veth", Some(3), Some(3)),
        ];
        let bridges = HashMap::from([("docker0".to_string(), 3)]);
        let v = bridge_ports(&links, &bridges);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].name.as_str(), v[0].ifindex), ("veth1", 10));
        assert_eq!(
            (v[0].bridge.as_str(), v[0].peer_netnsid),
            ("docker0", Some(0))
        );
        assert_eq!(v[0].bridge_mac, [0x02, 0, 0, 0, 0, 3], "its bridge's MAC");
    }
}
