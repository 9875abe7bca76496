//! The tunnel inventory: the decapsulating devices of this namespace,
//! found by link kind (`IFLA_INFO_KIND`), never by name. What such a
//! device hands up on its ingress is an inner packet the host routes next:
//! a container can wrap a packet to the metadata address in VXLAN (or any
//! of these) addressed to the host's own bridge address, and the outer
//! packet passes every bridge and veth program (docs/design.md, Tunnels).
//!
//! Every `tun` device counts: an overlay daemon's (flannel's `flannel0`,
//! a VPN's) cannot be told from a VM's tap by anything the kernel says,
//! and judging a device that carries no container's packet costs only the
//! program's run.

use crate::kernel::netlink::{self, Link};

/// The link kinds whose devices decapsulate into this namespace.
pub const TUNNEL_KINDS: &[&str] = &[
    "vxlan",
    "geneve",
    "ipip",
    "sit",
    "gre",
    "gretap",
    "ip6gre",
    "ip6gretap",
    "ip6tnl",
    "tun",
];

/// `ARPHRD_ETHER` (linux/if_arp.h).
const ARPHRD_ETHER: u16 = 1;

/// What the device hands up at its tc ingress, which decides the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Ethernet frames (vxlan, geneve, gretap, ip6gretap, a tap):
    /// `egress_tunnel`.
    Ethernet,
    /// Bare IP packets, no link header (tun, ipip, sit, gre, ip6gre,
    /// ip6tnl, an L3 geneve): `egress_tunnel_l3`.
    Ip,
}

/// A decapsulating device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub name: String,
    pub ifindex: u32,
    pub kind: String,
    pub layer: Layer,
    /// Its MAC address, when it has an Ethernet one.
    pub mac: Option<[u8; 6]>,
}

/// Whether a link of `kind` decapsulates into this namespace.
pub fn is_tunnel_kind(kind: &str) -> bool {
    TUNNEL_KINDS.contains(&kind)
}

/// The tunnels among `links`. The layer comes from the link type, not the
/// kind: a tun device is Ethernet in tap mode, geneve is IP in its L3 mode.
pub fn tunnels(links: &[Link]) -> Vec<Tunnel> {
    let mut out: Vec<Tunnel> = links
        .iter()
        .filter_map(|l| {
            let kind = l.kind.as_deref().filter(|k| is_tunnel_kind(k))?;
            Some(Tunnel {
                name: l.name.clone(),
                ifindex: l.index,
                kind: kind.to_owned(),
                mac: l.mac,
                layer: if l.link_type == ARPHRD_ETHER {
                    Layer::Ethernet
                } else {
                    Layer::Ip
                },
            })
        })
        .collect();
    out.sort_by_key(|t| t.ifindex);
    out
}

/// The tunnels of this namespace now.
pub fn inventory() -> std::io::Result<Vec<Tunnel>> {
    Ok(tunnels(&netlink::dump_links()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, index: u32, kind: &str, link_type: u16) -> Link {
        Link {
            name: name.into(),
            index,
            kind: Some(kind.into()),
            master: None,
            link_netnsid: None,
            mac: None,
            link_type,
        }
    }

    #[test]
    fn found_by_kind_with_the_layer_of_their_link_type() {
        // ARPHRD_*: ETHER 1, NONE 0xfffe, TUNNEL 768, TUNNEL6 769, IPGRE
        // 778, SIT 776, IP6GRE 823.
        let links = [
            link("flannel.1", 10, "vxlan", 1),
            link("vxlan.calico", 11, "vxlan", 1),
            link("flannel0", 12, "tun", 0xfffe),
            link("tap0", 13, "tun", 1),
            link("tunl0", 14, "ipip", 768),
            link("sit0", 15, "sit", 776),
            link("gre0", 16, "gre", 778),
            link("gretap0", 17, "gretap", 1),
            link("ip6gre0", 18, "ip6gre", 823),
            link("ip6gretap0", 19, "ip6gretap", 1),
            link("ip6tnl0", 20, "ip6tnl", 769),
            link("gnv0", 21, "geneve", 1),
            link("gnv1", 22, "geneve", 0xfffe),
            // Not tunnels, whatever their names say.
            link("docker0", 2, "bridge", 1),
            link("veth1", 3, "veth", 1),
            link("tunnel0", 4, "dummy", 1),
            link("vxlan0", 5, "macvlan", 1),
            link("wg0", 6, "wireguard", 0xfffe),
        ];
        let t = tunnels(&links);
        let got: Vec<(&str, Layer)> = t.iter().map(|t| (t.name.as_str(), t.layer)).collect();
        use Layer::*;
        assert_eq!(
            got,
            [
                ("flannel.1", Ethernet),
                ("vxlan.calico", Ethernet),
                ("flannel0", Ip),
                ("tap0", Ethernet),
                ("tunl0", Ip),
                ("sit0", Ip),
                ("gre0", Ip),
                ("gretap0", Ethernet),
                ("ip6gre0", Ip),
                ("ip6gretap0", Ethernet),
                ("ip6tnl0", Ip),
                ("gnv0", Ethernet),
                ("gnv1", Ip),
            ]
        );
        assert_eq!(t[2].kind, "tun");
        // A link without a kind (lo, a physical NIC) is none.
        let mut nic = link("eth0", 1, "x", 1);
        nic.kind = None;
        assert!(tunnels(&[nic]).is_empty());
    }
}
