//! A Docker-like host built from network namespaces.
//!
//! ```text
//!   container ns (eth0 172.17.0.2) --veth0--+
//!   container ns (eth0 172.17.0.3) --veth1--+-- docker0 (172.17.0.1/16, fd00:dead::1/64)
//!                                           |      "host" ns, forwarding on
//!                                        uplink 192.0.2.1/24, 2001:db8:1::1/64
//!                                           |
//!                                        eth0 192.0.2.2/24, 2001:db8:1::2/64
//!                                        svc0 (dummy): 169.254.169.254, 169.254.170.2,
//!                                          100.100.100.200, 192.0.0.192, 168.63.129.16,
//!                                          198.51.100.25,
//!                                          fd00:ec2::254, 2001:db8:25::25
//!                                        "cloud" ns
//! ```
//!
//! The host namespace routes each cloud address (host routes, no default
//! route) through the uplink; the cloud namespace routes the bridge subnets
//! back. There is no NAT: the cloud sees container source addresses. Every
//! namespace is deleted when the [`Topology`] is dropped, which also removes
//! every veth; nothing is ever created in the root namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::addrs::{self, DOCKER0};
use crate::netns::NetNs;

/// How long setup waits for links to come up and IPv6 to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bridge in the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Interface name (`docker0`, `br-test1`, ...).
    pub name: String,
    /// The bridge's own (gateway) IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv4 subnet (network address, prefix length).
    pub ipv4_net: (Ipv4Addr, u8),
    /// The bridge's own (gateway) IPv6 address.
    pub ipv6: Ipv6Addr,
    /// IPv6 subnet (network address, prefix length).
    pub ipv6_net: (Ipv6Addr, u8),
}

impl Bridge {
    /// `"a.b.c.d/len"`.
    pub fn ipv4_cidr(&self) -> String {
        format!("{}/{}", self.ipv4_net.0, self.ipv4_net.1)
    }

    /// `"x::/len"`.
    pub fn ipv6_cidr(&self) -> String {
        format!("{}/{}", self.ipv6_net.0, self.ipv6_net.1)
    }
}

/// A container: its own namespace with `eth0` on a veth into a bridge.
#[derive(Debug)]
pub struct Container {
    ns: NetNs,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    bridge: String,
    host_veth: String,
}

impl Container {
    /// The container's network namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// Address of the container's `eth0`.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// IPv6 address of the container's `eth0`.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// Name of the bridge the container is attached to.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Name of the host-side veth (a port of [`bridge`](Self::bridge)).
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }
}

/// The gateway Calico gives every pod: link-local, configured nowhere,
/// answered by the host's proxy ARP.
pub const CALICO_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The namespaces of one test's fake Docker host. See the module docs.
#[derive(Debug)]
pub struct Topology {
    // Drop order is declaration order; any order works since deleting a
    // namespace removes its veths from both ends.
    containers: Vec<Container>,
    cloud: NetNs,
    host: NetNs,
    bridges: Vec<Bridge>,
    base: String,
    next_veth: usize,
    services_if: String,
}

impl Topology {
    /// Host + docker0 + 2 containers + cloud. `name_prefix` (first 6
    /// characters) starts every namespace name, followed by a unique suffix
    /// and a role: `h` host, `k` cloud, `c0`, `c1`... containers.
    pub fn docker_like(name_prefix: &str) -> Result<Self> {
        Self::docker_like_with(name_prefix, 2)
    }

    /// Like [`docker_like`](Self::docker_like) with `containers` containers
    /// on docker0 (172.17.0.2, .3, ...; fd00:dead::2, ::3, ...).
    pub fn docker_like_with(name_prefix: &str, containers: usize) -> Result<Self> {
        let base = crate::unique_name(name_prefix);
        let host = NetNs::create(&format!("{base}h"))?;
        let cloud = NetNs::create(&format!("{base}k"))?;
        // From here on, any early return drops (and deletes) what exists.
        let mut topo = Topology {
            containers: Vec::new(),
            cloud,
            host,
            bridges: Vec::new(),
            base,
            next_veth: 0,
            services_if: addrs::CLOUD_SERVICES_IF.to_owned(),
        };
        topo.setup_host()?;
        topo.setup_cloud()?;
        topo.create_bridge(DOCKER0, addrs::DOCKER0_V4_NET, addrs::DOCKER0_V6_NET)?;
        for _ in 0..containers {
            topo.add_container(DOCKER0)?;
        }
        topo.settle()?;
        Ok(topo)
    }

    fn setup_host(&mut self) -> Result<()> {
        let h = &self.host;
        h.sysctl("net.ipv4.ip_forward", "1")?;
        h.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        h.sysctl("net.ipv6.conf.default.forwarding", "1")?;
        self.services_if = wire_cloud(h, &self.cloud)?;
        Ok(())
    }

    /// The fake cloud services' addresses, routed from the host namespace.
    fn setup_cloud(&mut self) -> Result<()> {
        for a in addrs::CLOUD_V4 {
            self.add_cloud_address(IpAddr::V4(a))?;
        }
        for a in addrs::CLOUD_V6 {
            self.add_cloud_address(IpAddr::V6(a))?;
        }
        Ok(())
    }

    /// Gives the cloud namespace one more address (on its service
    /// interface) and routes it from the host namespace through the uplink.
    pub fn add_cloud_address(&mut self, addr: IpAddr) -> Result<()> {
        let (fam, plen, via) = match addr {
            IpAddr::V4(_) => ("-4", 32, IpAddr::V4(addrs::UPLINK_CLOUD_V4)),
            IpAddr::V6(_) => ("-6", 128, IpAddr::V6(addrs::UPLINK_CLOUD_V6)),
        };
        let cidr = format!("{addr}/{plen}");
        let mut args = vec![fam, "addr", "add", &cidr, "dev", &self.services_if];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.cloud.ip(&args)?;
        self.host.ip(&[
            fam,
            "route",
            "add",
            &cidr,
            "via",
            &via.to_string(),
            "dev",
            addrs::UPLINK,
        ])?;
        Ok(())
    }

    fn create_bridge(
        &mut self,
        name: &str,
        ipv4_net: (Ipv4Addr, u8),
        ipv6_net: (Ipv6Addr, u8),
    ) -> Result<()> {
        crate::check_ifname(name)?;
        ensure!(
            self.bridge(name).is_none(),
            "bridge {name} already exists in this topology"
        );
        let ipv4 = Ipv4Addr::from(u32::from(ipv4_net.0) + 1);
        let ipv6 = Ipv6Addr::from(u128::from(ipv6_net.0) + 1);
        let h = &self.host;
        h.ip(&["link", "add", name, "type", "bridge"])?;
        let _ = h.sysctl(&format!("net.ipv6.conf.{name}.accept_dad"), "0");
        h.ip(&[
            "addr",
            "add",
            &format!("{ipv4}/{}", ipv4_net.1),
            "dev",
            name,
        ])?;
        h.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ipv6}/{}", ipv6_net.1),
            "dev",
            name,
            "nodad",
        ])?;
        h.ip(&["link", "set", name, "up"])?;
        // Return route from the cloud.
        self.cloud.ip(&[
            "route",
            "add",
            &format!("{}/{}", ipv4_net.0, ipv4_net.1),
            "via",
            &addrs::UPLINK_HOST_V4.to_string(),
        ])?;
        self.cloud.ip(&[
            "-6",
            "route",
            "add",
            &format!("{}/{}", ipv6_net.0, ipv6_net.1),
            "via",
            &addrs::UPLINK_HOST_V6.to_string(),
        ])?;
        self.bridges.push(Bridge {
            name: name.to_owned(),
            ipv4,
            ipv4_net,
            ipv6,
            ipv6_net,
        });
        Ok(())
    }

    /// Adds a bridge `name` (at most 15 characters, e.g. `br-test1`) to the
    /// host namespace with IPv4 subnet `ipv4_subnet` (`"172.18.0.0/16"`; the
    /// bridge gets the first address), an IPv6 subnet `fd00:dead:N::/64`
    /// (N = number of bridges so far), cloud return routes, and one container
    /// on it. Returns that container.
    pub fn add_bridge(&mut self, name: &str, ipv4_subnet: &str) -> Result<&Container> {
        let ipv4_net = parse_v4_cidr(ipv4_subnet)?;
        ensure!(
            ipv4_net.1 <= 30,
            "subnet {ipv4_subnet} too small for a gateway and a container"
        );
        let n = u16::try_from(self.bridges.len()).context("too many bridges")?;
        let ipv6_net = (Ipv6Addr::new(0xfd00, 0xdead, n, 0, 0, 0, 0, 0), 64);
        self.create_bridge(name, ipv4_net, ipv6_net)?;
        self.add_container(name)?;
        self.settle()?;
        Ok(self.containers.last().expect("just added"))
    }

    /// Adds a container namespace on the existing bridge `bridge`, with the
    /// next free addresses of its subnets, and waits until it is usable.
    pub fn add_container(&mut self, bridge: &str) -> Result<&Container> {
        let br = self
            .bridge(bridge)
            .with_context(|| format!("no bridge {bridge} in this topology"))?
            .clone();
        let k = self
            .containers
            .iter()
            .filter(|c| c.bridge == bridge)
            .count();
        let ipv4 = Ipv4Addr::from(u32::from(br.ipv4) + 1 + u32::try_from(k)?);
        let ipv6 = Ipv6Addr::from(u128::from(br.ipv6) + 1 + u128::try_from(k)?);
        let host_mask = if br.ipv4_net.1 == 0 {
            u32::MAX
        } else {
            u32::MAX >> br.ipv4_net.1
        };
        ensure!(
            u32::from(ipv4) & host_mask < host_mask,
            "subnet {} of {bridge} is full",
            br.ipv4_cidr()
        );
        let idx = self.next_veth;
        self.next_veth += 1;
        let host_veth = format!("veth{idx}");
        crate::check_ifname(&host_veth)?;
        let ns = NetNs::create(&format!("{}c{idx}", self.base))?;
        let container = Container {
            ns,
            ipv4,
            ipv6,
            bridge: bridge.to_owned(),
            host_veth: host_veth.clone(),
        };
        let h = &self.host;
        h.ip(&[
            "link",
            "add",
            &host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            container.ns.name(),
        ])?;
        let _ = h.sysctl(&format!("net.ipv6.conf.{host_veth}.accept_dad"), "0");
        h.ip(&["link", "set", &host_veth, "master", bridge])?;
        h.ip(&["link", "set", &host_veth, "up"])?;
        let c = &container.ns;
        let _ = c.sysctl("net.ipv6.conf.eth0.accept_dad", "0");
        c.ip(&[
            "addr",
            "add",
            &format!("{ipv4}/{}", br.ipv4_net.1),
            "dev",
            "eth0",
        ])?;
        c.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ipv6}/{}", br.ipv6_net.1),
            "dev",
            "eth0",
            "nodad",
        ])?;
        c.ip(&["link", "set", "eth0", "up"])?;
        c.ip(&["route", "add", "default", "via", &br.ipv4.to_string()])?;
        c.ip(&["-6", "route", "add", "default", "via", &br.ipv6.to_string()])?;
        container.ns.wait_link_up("eth0", SETTLE_TIMEOUT)?;
        container.ns.wait_ipv6_settled(SETTLE_TIMEOUT)?;
        self.containers.push(container);
        Ok(self.containers.last().expect("just added"))
    }

    /// Adds a pod the way routed-veth CNIs (Calico) wire one, without a
    /// bridge: a veth `host_veth` (e.g. `cali1a2b3c`) whose pod end `eth0`
    /// holds `ipv4`/32 with `default via 169.254.1.1 dev eth0` (an address
    /// that exists nowhere); the host end answers the pod's ARP by proxy ARP
    /// and routes `ipv4`/32 to the veth; the cloud routes it back through
    /// the uplink. The pod's egress enters the host at the veth's ingress.
    pub fn add_routed_pod(&mut self, host_veth: &str, ipv4: Ipv4Addr) -> Result<&Container> {
        crate::check_ifname(host_veth)?;
        let idx = self.next_veth;
        self.next_veth += 1;
        let ns = NetNs::create(&format!("{}p{idx}", self.base))?;
        let h = &self.host;
        h.ip(&[
            "link",
            "add",
            host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        h.sysctl(&format!("net.ipv4.conf.{host_veth}.proxy_arp"), "1")?;
        h.ip(&["link", "set", host_veth, "up"])?;
        h.ip(&[
            "route",
            "add",
            &format!("{ipv4}/32"),
            "dev",
            host_veth,
            "scope",
            "link",
        ])?;
        // Proxy ARP answers for an address the host routes elsewhere than
        // back out of the asking interface.
        if h.exec_stdout(&["ip", "route", "show", &format!("{CALICO_GATEWAY}/32")])?
            .trim()
            .is_empty()
        {
            h.ip(&[
                "route",
                "add",
                &format!("{CALICO_GATEWAY}/32"),
                "via",
                &addrs::UPLINK_CLOUD_V4.to_string(),
            ])?;
        }
        ns.ip(&["addr", "add", &format!("{ipv4}/32"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&[
            "route",
            "add",
            &format!("{CALICO_GATEWAY}/32"),
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &CALICO_GATEWAY.to_string(),
            "dev",
            "eth0",
        ])?;
        self.cloud.ip(&[
            "route",
            "add",
            &format!("{ipv4}/32"),
            "via",
            &addrs::UPLINK_HOST_V4.to_string(),
        ])?;
        ns.wait_link_up("eth0", SETTLE_TIMEOUT)?;
        self.host.wait_link_up(host_veth, SETTLE_TIMEOUT)?;
        self.containers.push(Container {
            ns,
            ipv4,
            ipv6: Ipv6Addr::UNSPECIFIED,
            bridge: String::new(),
            host_veth: host_veth.to_owned(),
        });
        Ok(self.containers.last().expect("just added"))
    }

    /// Waits until every link the topology made is up and no IPv6 address
    /// is tentative.
    fn settle(&self) -> Result<()> {
        for br in &self.bridges {
            if self.containers.iter().any(|c| c.bridge == br.name) {
                self.host.wait_link_up(&br.name, SETTLE_TIMEOUT)?;
            }
        }
        self.host.wait_link_up(addrs::UPLINK, SETTLE_TIMEOUT)?;
        for c in &self.containers {
            self.host.wait_link_up(&c.host_veth, SETTLE_TIMEOUT)?;
            c.ns.wait_link_up("eth0", SETTLE_TIMEOUT)?;
        }
        self.cloud.wait_link_up("eth0", SETTLE_TIMEOUT)?;
        for ns in self.all_ns() {
            ns.wait_ipv6_settled(SETTLE_TIMEOUT)?;
        }
        Ok(())
    }

    fn all_ns(&self) -> impl Iterator<Item = &NetNs> {
        [&self.host, &self.cloud]
            .into_iter()
            .chain(self.containers.iter().map(|c| &c.ns))
    }

    /// The "host" namespace (bridges, forwarding; where the loader runs).
    pub fn host(&self) -> &NetNs {
        &self.host
    }

    /// The "cloud" namespace holding the metadata/SMTP addresses.
    pub fn cloud(&self) -> &NetNs {
        &self.cloud
    }

    /// All containers, in creation order (docker0 ones first).
    pub fn containers(&self) -> &[Container] {
        &self.containers
    }

    /// Container `i` (panics if there is none).
    pub fn container(&self, i: usize) -> &Container {
        &self.containers[i]
    }

    /// Name of the default bridge, `docker0`.
    pub fn bridge_name(&self) -> &str {
        DOCKER0
    }

    /// All bridges, docker0 first.
    pub fn bridges(&self) -> &[Bridge] {
        &self.bridges
    }

    /// The bridge called `name`.
    pub fn bridge(&self, name: &str) -> Option<&Bridge> {
        self.bridges.iter().find(|b| b.name == name)
    }

    /// Names of all namespaces of this topology (host, cloud, containers).
    pub fn namespace_names(&self) -> Vec<String> {
        self.all_ns().map(|n| n.name().to_owned()).collect()
    }

    /// The common start of this topology's namespace names.
    pub fn name_base(&self) -> &str {
        &self.base
    }

    /// Name of the cloud interface holding the service addresses (`svc0`,
    /// or `lo` without the dummy driver).
    pub fn cloud_services_if(&self) -> &str {
        &self.services_if
    }

    /// `ip addr`, `ip route` and `ip -6 route` of every namespace, for
    /// failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for ns in self.all_ns() {
            s.push_str(&format!("=== netns {} ===\n", ns.name()));
            for args in [&["-br", "addr"][..], &["route"][..], &["-6", "route"][..]] {
                match ns.ip(args) {
                    Ok(o) => s.push_str(&o),
                    Err(e) => s.push_str(&format!("{e:#}\n")),
                }
            }
        }
        s
    }
}

/// Parses `"a.b.c.d/len"`; the address must be the network address.
pub fn parse_v4_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (a, l) = s
        .split_once('/')
        .with_context(|| format!("{s:?}: expected a.b.c.d/len"))?;
    let addr: Ipv4Addr = a.parse().with_context(|| format!("{s:?}: bad address"))?;
    let len: u8 = l
        .parse()
        .with_context(|| format!("{s:?}: bad prefix length"))?;
    if len > 32 {
        bail!("{s:?}: prefix length > 32");
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ensure!(
        u32::from(addr) & !mask == 0,
        "{s:?}: host bits set (network is {}/{len})",
        Ipv4Addr::from(u32::from(addr) & mask)
    );
    Ok((addr, len))
}

/// The uplink from `host` to `cloud` (host side `uplink` with 192.0.2.1/24
/// and 2001:db8:1::1/64, cloud side `eth0` with .2 and ::2) and the cloud's
/// service interface for the fake services' addresses: a dummy, or `lo`
/// where the dummy driver is missing. Routes are the caller's. Returns the
/// service interface's name.
pub(crate) fn wire_cloud(host: &NetNs, cloud: &NetNs) -> Result<String> {
    // The peer is created directly inside the cloud namespace.
    host.ip(&[
        "link",
        "add",
        addrs::UPLINK,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        cloud.name(),
    ])?;
    host.ip(&[
        "addr",
        "add",
        &format!("{}/24", addrs::UPLINK_HOST_V4),
        "dev",
        addrs::UPLINK,
    ])?;
    host.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{}/64", addrs::UPLINK_HOST_V6),
        "dev",
        addrs::UPLINK,
        "nodad",
    ])?;
    host.ip(&["link", "set", addrs::UPLINK, "up"])?;
    let _ = cloud.sysctl("net.ipv6.conf.eth0.accept_dad", "0");
    cloud.ip(&[
        "addr",
        "add",
        &format!("{}/24", addrs::UPLINK_CLOUD_V4),
        "dev",
        "eth0",
    ])?;
    cloud.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{}/64", addrs::UPLINK_CLOUD_V6),
        "dev",
        "eth0",
        "nodad",
    ])?;
    cloud.ip(&["link", "set", "eth0", "up"])?;
    if cloud
        .ip(&["link", "add", addrs::CLOUD_SERVICES_IF, "type", "dummy"])
        .is_ok()
    {
        cloud.ip(&["link", "set", addrs::CLOUD_SERVICES_IF, "up"])?;
        Ok(addrs::CLOUD_SERVICES_IF.to_owned())
    } else {
        Ok("lo".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_v4_cidr("172.18.0.0/16").unwrap(),
            (Ipv4Addr::new(172, 18, 0, 0), 16)
        );
        assert!(parse_v4_cidr("172.18.0.1/16").is_err());
        assert!(parse_v4_cidr("172.18.0.0").is_err());
        assert!(parse_v4_cidr("172.18.0.0/33").is_err());
    }
}
