//! rtnetlink: link events (so a new bridge is filtered as it appears, not at
//! the next rescan) and the legacy tc filters on an interface (for `status`
//! when attached with `--attach-mode netlink`, which leaves no pin).

use futures::{Stream, StreamExt, TryStreamExt};
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::constants::RTMGRP_LINK;

/// A stream that yields once per link change (new, changed or deleted
/// interface) in this network namespace. `None` if netlink is unavailable;
/// the periodic rescan still covers that case.
pub fn link_events() -> Option<impl Stream<Item = ()> + Unpin> {
    let (mut conn, _handle, messages) = rtnetlink::new_connection().ok()?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))
        .ok()?;
    tokio::spawn(conn);
    Some(messages.map(|_| ()))
}

/// A legacy (clsact) bpf filter on an interface's ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyFilter {
    pub program_name: String,
    pub program_id: u32,
}

/// The bpf filters on `ifindex`'s clsact ingress.
pub async fn legacy_ingress_filters(ifindex: u32) -> Vec<LegacyFilter> {
    let Ok((conn, handle, _)) = rtnetlink::new_connection() else {
        return Vec::new();
    };
    tokio::spawn(conn);
    let mut out = Vec::new();
    let mut filters = handle
        .traffic_filter(ifindex as i32)
        .get()
        .ingress()
        .execute();
    while let Ok(Some(msg)) = filters.try_next().await {
        let mut f = LegacyFilter {
            program_name: String::new(),
            program_id: 0,
        };
        for attr in &msg.attributes {
            if let TcAttribute::Options(opts) = attr {
                for o in opts {
                    match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => f.program_name = n.clone(),
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => f.program_id = *id,
                        _ => {}
                    }
                }
            }
        }
        if f.program_id != 0 {
            out.push(f);
        }
    }
    out
}

/// One link of this network namespace, as an RTM_GETLINK dump reports it:
/// what the endpoint layer needs to find the containers' veths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// `IFLA_INFO_KIND` ("veth", "bridge"...), if any.
    pub kind: Option<String>,
    /// The bridge (or other controller) it is a port of (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// The network namespace of its peer, as this namespace numbers it
    /// (`IFLA_LINK_NETNSID`): a veth whose other end is in a container.
    pub link_netnsid: Option<i32>,
    /// Its MAC address (`IFLA_ADDRESS`), when it has an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// Its link type (`ifi_type`, an `ARPHRD_*`): `ARPHRD_ETHER` (1) for
    /// a device that hands up Ethernet frames.
    pub link_type: u16,
}

fn nl_io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// One request on a fresh NETLINK_ROUTE socket, every reply message until
/// the dump's end (or the single answer of a plain request).
fn request(
    message: netlink_packet_route::RouteNetlinkMessage,
    flags: u16,
) -> std::io::Result<Vec<netlink_packet_route::RouteNetlinkMessage>> {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    let mut socket = netlink_sys::Socket::new(netlink_sys::constants::NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    loop {
        let (bytes, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < bytes.len() {
            let msg = NetlinkMessage::<netlink_packet_route::RouteNetlinkMessage>::deserialize(
                &bytes[offset..],
            )
            .map_err(nl_io)?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(out),
                        Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
                    };
                }
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if flags & netlink_packet_core::NLM_F_DUMP != netlink_packet_core::NLM_F_DUMP {
                return Ok(out);
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Every link of this network namespace (a blocking RTM_GETLINK dump, about
/// a millisecond for a hundred veths).
pub fn dump_links() -> std::io::Result<Vec<Link>> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
    use netlink_packet_route::{
        RouteNetlinkMessage,
        link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    };
    let replies = request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    let mut out = Vec::new();
    for m in replies {
        let RouteNetlinkMessage::NewLink(link) = m else {
            continue;
        };
        let mut l = Link {
            name: String::new(),
            index: link.header.index,
            kind: None,
            master: None,
            link_netnsid: None,
            mac: None,
            link_type: u16::from(link.header.link_layer_type),
        };
        for a in &link.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Controller(m) => l.master = Some(*m),
                LinkAttribute::LinkNetNsId(id) => l.link_netnsid = Some(*id),
                LinkAttribute::Address(a) => l.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(match k {
                                InfoKind::Veth => "veth".to_owned(),
                                InfoKind::Bridge => "bridge".to_owned(),
                                other => other.to_string(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(l);
    }
    Ok(out)
}

/// The id this network namespace gives the namespace of `netns` (an open
/// `/proc/PID/ns/net` or a bind mount such as Docker's sandbox key), as a
/// veth's `IFLA_LINK_NETNSID` names it; `None` if it has none (no link
/// between the two was ever reported).
pub fn netns_id(netns: &std::fs::File) -> std::io::Result<Option<i32>> {
    use std::os::fd::AsRawFd;

    use netlink_packet_core::NLM_F_REQUEST;
    use netlink_packet_route::{
        RouteNetlinkMessage,
        nsid::{NsidAttribute, NsidMessage},
    };
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(netns.as_raw_fd() as u32));
    for m in request(RouteNetlinkMessage::GetNsId(msg), NLM_F_REQUEST)? {
        if let RouteNetlinkMessage::NewNsId(m) = m {
            for a in m.attributes {
                if let NsidAttribute::Id(id) = a {
                    return Ok((id >= 0).then_some(id));
                }
            }
        }
    }
    Ok(None)
}

/// One neighbour entry (RTM_GETNEIGH): an address's MAC as this namespace
/// resolved it (`AF_INET`, `AF_INET6`: `ifindex` is the interface it was
/// resolved on), or a bridge's forwarding entry (`AF_BRIDGE`: the port
/// `ifindex` a MAC was learned on, `master` the bridge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: Option<std::net::IpAddr>,
    pub mac: Option<[u8; 6]>,
    pub master: Option<u32>,
}

/// The neighbour table (`fdb = false`: `ip neigh`) or the bridges'
/// forwarding databases (`fdb = true`: `bridge fdb`) of this network
/// namespace, as one blocking dump.
pub fn dump_neighbours(fdb: bool) -> std::io::Result<Vec<Neighbour>> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
    use netlink_packet_route::{
        AddressFamily, RouteNetlinkMessage,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    };
    let mut msg = NeighbourMessage::default();
    msg.header.family = if fdb {
        AddressFamily::Bridge
    } else {
        AddressFamily::Unspec
    };
    let replies = request(
        RouteNetlinkMessage::GetNeighbour(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    let mut out = Vec::new();
    for m in replies {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        let mut e = Neighbour {
            ifindex: n.header.ifindex,
            ip: None,
            mac: None,
            master: None,
        };
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    e.ip = Some((*a).into())
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    e.ip = Some((*a).into())
                }
                NeighbourAttribute::LinkLayerAddress(m) => {
                    e.mac = <[u8; 6]>::try_from(m.as_slice()).ok()
                }
                NeighbourAttribute::Controller(b) => e.master = Some(*b),
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}
