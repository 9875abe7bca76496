//! The probe's network namespace: an anonymous namespace held only by the
//! probing thread, a veth from it into the bridge, an unused address of
//! the bridge's subnet and a default route via the bridge. The kernel
//! deletes the namespace, and the veth pair with it, when that thread
//! ends, even if the process is killed; the bridge end is also deleted
//! explicitly.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkFlags};
use nix::sched::CloneFlags;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::verify::{
    error::{BridgeProbeError, NamespaceStep, NetlinkStep},
    netlink::is_forwarding,
    probe::{METADATA_PROBE, PROBE_WAIT, send_syns},
    report::Answer,
};

/// How long the probe's link gets to come up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the bridge gets to forward on the probe's port: two default STP
/// forward delays (15 s each) and some margin; immediate without STP.
const PORT_FORWARDING_TIMEOUT: Duration = Duration::from_secs(35);

/// How long the endpoint probe waits for the running loader to attach its
/// program to the probe's port (it follows link events: milliseconds).
const ENDPOINT_ATTACH_TIMEOUT: Duration = Duration::from_secs(3);

/// One probe of one bridge.
pub(super) struct ProbeRun {
    /// `Some`: the endpoint probe: wait for the loader to attach the
    /// endpoint program to this port (its pinned link), then send the
    /// metadata SYN alone and read the port's endpoint counters.
    pub endpoint: Option<crate::kernel::pins::PinDir>,
    pub bridge_index: u32,
    /// The bridge end's name.
    pub veth: String,
    pub gateway: Ipv4Addr,
    pub probe: Ipv4Addr,
    pub prefix: u8,
    /// The SMTP target and how many SYNs to send it.
    pub smtp: Option<(SocketAddrV4, u32)>,
}

pub(super) struct Answers {
    pub metadata: Answer,
    pub smtp: Vec<Answer>,
    /// The endpoint probe: whether the port got the endpoint program, and
    /// its `metadata_blocked` during the probe.
    pub endpoint: Option<(bool, u64)>,
}

/// `metadata_blocked` of endpoint `ifindex`, if it is one.
fn endpoint_blocked(pins: &crate::kernel::pins::PinDir, ifindex: u32) -> Option<u64> {
    crate::observe::endpoints::read(pins)
        .ok()?
        .into_iter()
        .find(|(e, _)| e.ifindex == ifindex)
        .map(|(_, c)| {
            c.by_verdict[egress_ebpf_common::counters::CounterId::MetadataBlocked as usize].packets
        })
}

impl ProbeRun {
    /// On a thread of its own: its network namespace changes.
    pub fn run(&self) -> Result<Answers, BridgeProbeError> {
        let open = |step| {
            File::open("/proc/thread-self/ns/net")
                .map_err(|cause| BridgeProbeError::OpenNamespace { step, cause })
        };
        let host_ns = open(NamespaceStep::OpenHost)?;
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(BridgeProbeError::namespace(NamespaceStep::Create))?;
        let probe_ns = open(NamespaceStep::OpenProbe)?;
        // Interfaces created here get no IPv6 (no router solicitations or
        // MLD reports on the bridge while it is probed).
        for key in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6"), "1");
        }
        // A runtime of its own, dropped with this thread: the netlink
        // connection opened below in the probe's namespace holds that
        // namespace, which must go when the thread does; the caller's
        // runtime lives on to the next bridge.
        let rt = crate::kernel::runtime::current_thread().map_err(BridgeProbeError::Runtime)?;
        let runtime = rt.enter();
        let (conn, probe_nl, _) =
            rtnetlink::new_connection().map_err(BridgeProbeError::Connection)?;
        rt.spawn(conn);
        nix::sched::setns(&host_ns, CloneFlags::CLONE_NEWNET)
            .map_err(BridgeProbeError::namespace(NamespaceStep::ReturnToHost))?;
        let (conn, host_nl, _) =
            rtnetlink::new_connection().map_err(BridgeProbeError::Connection)?;
        rt.spawn(conn);
        // One request creates both ends: the bridge port here, its peer in
        // the probe's namespace. Either both exist or neither.
        let peer = LinkUnspec::new_with_name("eth0")
            .setns_by_fd(probe_ns.as_raw_fd())
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new(&self.veth, "eth0")
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(self.bridge_index)
            .up()
            .build();
        rt.block_on(host_nl.link().add(veth).execute())
            .map_err(BridgeProbeError::netlink(NetlinkStep::CreateVeth(
                self.veth.clone(),
            )))?;
        nix::sched::setns(&probe_ns, CloneFlags::CLONE_NEWNET)
            .map_err(BridgeProbeError::namespace(NamespaceStep::EnterProbe))?;
        let result = rt
            .block_on(self.configure(&probe_nl, &host_nl))
            .and_then(|()| {
                // The wait and the counters are read from the host's
                // namespace (the port and its TCX hook live there).
                let endpoint = match &self.endpoint {
                    None => None,
                    Some(pins) => {
                        nix::sched::setns(&host_ns, CloneFlags::CLONE_NEWNET)
                            .map_err(BridgeProbeError::namespace(NamespaceStep::ReturnToHost))?;
                        let index = nix::net::if_::if_nametoindex(self.veth.as_str()).unwrap_or(0);
                        let deadline = Instant::now() + ENDPOINT_ATTACH_TIMEOUT;
                        // Attached: the loader pinned the link (after it
                        // wrote the entry).
                        let before = loop {
                            if crate::kernel::attach::live_pinned_link(pins, &self.veth).is_some()
                                && let Some(n) = endpoint_blocked(pins, index)
                            {
                                break Some(n);
                            }
                            if Instant::now() >= deadline {
                                break None;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        };
                        nix::sched::setns(&probe_ns, CloneFlags::CLONE_NEWNET)
                            .map_err(BridgeProbeError::namespace(NamespaceStep::EnterProbe))?;
                        Some((pins, index, before))
                    }
                };
                let metadata = send_syns(METADATA_PROBE, 1, PROBE_WAIT)
                    .map_err(BridgeProbeError::MetadataProbe)?
                    .remove(0);
                let endpoint = match endpoint {
                    None => None,
                    Some((_, _, None)) => Some((false, 0)),
                    Some((pins, index, Some(b))) => {
                        // The SYN was judged when send_syns returned (it
                        // waited for an answer that never came).
                        let after = endpoint_blocked(pins, index).unwrap_or(b);
                        Some((true, after.saturating_sub(b)))
                    }
                };
                if endpoint.is_some() {
                    return Ok(Answers {
                        metadata,
                        smtp: Vec::new(),
                        endpoint,
                    });
                }
                let smtp = match self.smtp {
                    Some((target, count)) => send_syns(target, count as usize, PROBE_WAIT)
                        .map_err(BridgeProbeError::SmtpProbe)?,
                    None => Vec::new(),
                };
                Ok(Answers {
                    metadata,
                    smtp,
                    endpoint: None,
                })
            });
        // Leave the namespace and delete the bridge end now; the namespace
        // itself goes when this thread and the runtime's sockets are gone.
        let back = nix::sched::setns(&host_ns, CloneFlags::CLONE_NEWNET);
        let deleted = rt.block_on(async {
            let link = host_nl
                .link()
                .get()
                .match_name(self.veth.clone())
                .execute()
                .try_next()
                .await;
            match link {
                Ok(Some(l)) => host_nl.link().del(l.header.index).execute().await,
                _ => Ok(()),
            }
        });
        if let Err(e) = deleted {
            log::warn!(
                "deleting veth {}: {e} (it goes with the probe's namespace)",
                self.veth
            );
        }
        drop(runtime);
        drop(rt);
        back.map_err(BridgeProbeError::namespace(NamespaceStep::ReturnToHost))?;
        result
    }

    /// Inside the probe's namespace: address, link up, default route via
    /// the bridge; then waits until the bridge forwards on the new port.
    async fn configure(&self, nl: &Handle, host: &Handle) -> Result<(), BridgeProbeError> {
        let link = nl
            .link()
            .get()
            .match_name("eth0".to_owned())
            .execute()
            .try_next()
            .await
            .map_err(BridgeProbeError::netlink(NetlinkStep::ProbeLink))?
            .ok_or(BridgeProbeError::ProbeLinkMissing)?;
        let index = link.header.index;
        nl.address()
            .add(index, IpAddr::V4(self.probe), self.prefix)
            .execute()
            .await
            .map_err(BridgeProbeError::netlink(NetlinkStep::AddAddress {
                address: self.probe,
                prefix: self.prefix,
            }))?;
        nl.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(BridgeProbeError::netlink(NetlinkStep::ProbeLinkUp))?;
        let deadline = Instant::now() + LINK_UP_TIMEOUT;
        loop {
            let l = nl
                .link()
                .get()
                .match_index(index)
                .execute()
                .try_next()
                .await
                .map_err(BridgeProbeError::netlink(NetlinkStep::ProbeLink))?;
            if l.is_some_and(|l| l.header.flags.contains(LinkFlags::LowerUp)) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(BridgeProbeError::LinkNotUp(LINK_UP_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nl.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(self.gateway)
                    .output_interface(index)
                    .build(),
            )
            .execute()
            .await
            .map_err(BridgeProbeError::netlink(NetlinkStep::DefaultRoute(
                self.gateway,
            )))?;
        // The bridge enables a port when the link watcher reports its
        // carrier, some time after the link is up; until then it drops
        // the probe's frames. With STP that takes two forward delays.
        let deadline = Instant::now() + PORT_FORWARDING_TIMEOUT;
        loop {
            let port = host
                .link()
                .get()
                .match_name(self.veth.clone())
                .execute()
                .try_next()
                .await
                .map_err(BridgeProbeError::netlink(NetlinkStep::BridgePort(
                    self.veth.clone(),
                )))?;
            if port.is_some_and(|l| is_forwarding(&l.attributes)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BridgeProbeError::NotForwarding {
                    port: self.veth.clone(),
                    waited: PORT_FORWARDING_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
