//! What verify reads over rtnetlink: the bridge's address and subnet, the
//! addresses already in use on it, and whether a bridge port forwards.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::AddressAttribute,
    link::{BridgePortState, InfoBridgePort, InfoKind, InfoPortData, LinkAttribute, LinkInfo},
    neighbour::{NeighbourAddress, NeighbourAttribute},
};
use rtnetlink::Handle;

use crate::verify::error::{BridgeProbeError, NetlinkStep};

/// The bridge's IPv4 address, every local IPv4 address of the host, and
/// the addresses its neighbour table knows on the bridge.
pub(super) struct BridgeNet {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub taken: Vec<Ipv4Addr>,
}

pub(super) async fn bridge_net(handle: &Handle, index: u32) -> Result<BridgeNet, BridgeProbeError> {
    let link = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(BridgeProbeError::netlink(NetlinkStep::ReadLink))?
        .ok_or(BridgeProbeError::InterfaceGone)?;
    let is_bridge = link.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
    });
    if !is_bridge {
        return Err(BridgeProbeError::NotABridge);
    }
    let mut own = None;
    let mut taken = Vec::new();
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(BridgeProbeError::netlink(NetlinkStep::ReadAddresses))?
    {
        for attr in &msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(a))
            | AddressAttribute::Address(IpAddr::V4(a)) = attr
            {
                taken.push(*a);
                if msg.header.index == index && own.is_none() {
                    own = Some((*a, msg.header.prefix_len));
                }
            }
        }
    }
    let (address, prefix) = own.ok_or(BridgeProbeError::NoBridgeAddress)?;
    let mut neigh = handle
        .neighbours()
        .get()
        .set_address_family(netlink_packet_route::AddressFamily::Inet)
        .execute();
    while let Some(msg) = neigh
        .try_next()
        .await
        .map_err(BridgeProbeError::netlink(NetlinkStep::ReadNeighbours))?
    {
        if msg.header.ifindex != index {
            continue;
        }
        for attr in &msg.attributes {
            if let NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) = attr {
                taken.push(*a);
            }
        }
    }
    Ok(BridgeNet {
        address,
        prefix,
        taken,
    })
}

/// An address of the bridge's subnet for the probe: from the top down
/// (Docker hands out addresses from the bottom), skipping every address the
/// host holds or has seen on the bridge.
pub fn pick_probe_address(bridge: Ipv4Addr, prefix: u8, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    if prefix > 30 {
        return None;
    }
    let mask = u32::MAX << (32 - prefix);
    let net = u32::from(bridge) & mask;
    let broadcast = net | !mask;
    (net + 1..broadcast)
        .rev()
        .take(256)
        .map(Ipv4Addr::from)
        .find(|a| *a != bridge && !taken.contains(a))
}

/// Whether a bridge port is in the forwarding state.
pub(super) fn is_forwarding(attributes: &[LinkAttribute]) -> bool {
    attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(port)) => port
                .iter()
                .any(|p| matches!(p, InfoBridgePort::State(BridgePortState::Forwarding))),
            _ => false,
        }),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_address_from_the_top_of_the_subnet() {
        let br = Ipv4Addr::new(172, 17, 0, 1);
        assert_eq!(
            pick_probe_address(br, 16, &[]),
            Some(Ipv4Addr::new(172, 17, 255, 254))
        );
        let taken = [Ipv4Addr::new(172, 17, 255, 254)];
        assert_eq!(
            pick_probe_address(br, 16, &taken),
            Some(Ipv4Addr::new(172, 17, 255, 253))
        );
        // A /30 has two hosts: the bridge and one more.
        let br = Ipv4Addr::new(10, 9, 0, 1);
        assert_eq!(
            pick_probe_address(br, 30, &[]),
            Some(Ipv4Addr::new(10, 9, 0, 2))
        );
        assert_eq!(
            pick_probe_address(br, 30, &[Ipv4Addr::new(10, 9, 0, 2)]),
            None
        );
        assert_eq!(pick_probe_address(br, 31, &[]), None);
    }
}
