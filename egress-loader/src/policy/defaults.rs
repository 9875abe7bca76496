//! The built-in block rules, and the clouds' endpoints that a policy is
//! checked against: the metadata services it must leave closed and the
//! resolvers and clocks it must leave open (docs/configuration.md, "The
//! clouds' endpoints", says where each comes from).
//!
//! The built-in rules apply unless the file says `defaults = false` or
//! removes one with `[[unblock]]`; `[[block]]` entries add to them.

use std::net::IpAddr;

use crate::policy::values::Protocol;

/// One built-in block rule.
#[derive(Debug, Clone, Copy)]
pub struct DefaultBlock {
    /// What `[[unblock]] name = ...` names it by.
    pub name: &'static str,
    pub cidr: &'static str,
    pub protocol: Option<&'static str>,
    pub ports: &'static [u16],
    /// Ports left open on every protocol the rule blocks.
    pub except_ports: &'static [u16],
    pub comment: &'static str,
}

/// Every built-in rule rejects: clients fail at once, like the seed's
/// `-j REJECT`.
pub const DEFAULT_ACTION: &str = "reject";

pub const DEFAULT_BLOCKS: &[DefaultBlock] = &[
    DefaultBlock {
        name: "metadata",
        cidr: "169.254.169.254/32",
        protocol: None,
        ports: &[],
        except_ports: &[53],
        comment: "instance metadata: AWS, Azure, GCP, OCI, DigitalOcean, Hetzner, OpenStack; DNS (53) stays open: GCP's resolver",
    },
    DefaultBlock {
        name: "aws-metadata-ipv6",
        cidr: "fd00:ec2::254/128",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "AWS instance metadata over IPv6",
    },
    DefaultBlock {
        name: "aws-ecs",
        cidr: "169.254.170.2/32",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "ECS task metadata and credentials",
    },
    DefaultBlock {
        name: "aws-eks-pod-identity",
        cidr: "169.254.170.23/32",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "EKS Pod Identity agent (credentials on TCP 80)",
    },
    DefaultBlock {
        name: "aws-eks-pod-identity-ipv6",
        cidr: "fd00:ec2::23/128",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "EKS Pod Identity agent over IPv6",
    },
    DefaultBlock {
        name: "alibaba",
        cidr: "100.100.100.200/32",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "Alibaba Cloud metadata",
    },
    DefaultBlock {
        name: "alibaba-ipv6",
        cidr: "fd00:100::100:200/128",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "Alibaba Cloud metadata over IPv6",
    },
    DefaultBlock {
        name: "oracle-cloud-at-customer",
        cidr: "192.0.0.192/32",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "Oracle Cloud@Customer metadata",
    },
    DefaultBlock {
        name: "oracle-ipv6",
        cidr: "fd00:c1::a9fe:a9fe/128",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "Oracle Cloud metadata over IPv6",
    },
    DefaultBlock {
        name: "tencent",
        cidr: "169.254.0.23/32",
        protocol: None,
        ports: &[],
        except_ports: &[],
        comment: "Tencent Cloud metadata (metadata.tencentyun.com)",
    },
    DefaultBlock {
        name: "azure-wireserver",
        cidr: "168.63.129.16/32",
        protocol: Some("tcp"),
        ports: &[80, 32526],
        except_ports: &[],
        comment: "Azure WireServer and host agent (its DNS on 53 stays open)",
    },
];

/// The built-in rule called `name`.
pub fn by_name(name: &str) -> Option<&'static DefaultBlock> {
    DEFAULT_BLOCKS.iter().find(|d| d.name == name)
}

/// A cloud endpoint: a service at an address, on one protocol and port.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub addr: &'static str,
    pub protocol: Protocol,
    pub port: u16,
    pub what: &'static str,
}

impl Endpoint {
    pub fn ip(&self) -> IpAddr {
        self.addr.parse().expect("a valid address in the table")
    }
}

const fn tcp(addr: &'static str, port: u16, what: &'static str) -> Endpoint {
    Endpoint {
        addr,
        protocol: Protocol::Tcp,
        port,
        what,
    }
}

const fn udp(addr: &'static str, port: u16, what: &'static str) -> Endpoint {
    Endpoint {
        addr,
        protocol: Protocol::Udp,
        port,
        what,
    }
}

/// Services that hand out credentials or instance secrets: `check-config`
/// and `run` warn when a policy leaves one open.
pub const KNOWN_METADATA: &[Endpoint] = &[
    tcp(
        "169.254.169.254",
        80,
        "instance metadata (AWS, Azure, GCP, OCI, DigitalOcean, Hetzner, OpenStack)",
    ),
    tcp("fd00:ec2::254", 80, "AWS instance metadata over IPv6"),
    tcp("169.254.170.2", 80, "ECS task credentials"),
    tcp("169.254.170.23", 80, "EKS Pod Identity credentials"),
    tcp("fd00:ec2::23", 80, "EKS Pod Identity credentials over IPv6"),
    tcp("100.100.100.200", 80, "Alibaba Cloud metadata"),
    tcp("fd00:100::100:200", 80, "Alibaba Cloud metadata over IPv6"),
    tcp("192.0.0.192", 80, "Oracle Cloud@Customer metadata"),
    tcp("fd00:c1::a9fe:a9fe", 80, "Oracle Cloud metadata over IPv6"),
    tcp("169.254.0.23", 80, "Tencent Cloud metadata"),
    tcp("168.63.129.16", 80, "Azure WireServer"),
    tcp("168.63.129.16", 32526, "Azure host agent"),
];

/// What the default policy must leave open (a test each): the clouds'
/// resolvers and clocks, and node-local DNS caches.
pub const KEEP_OPEN: &[Endpoint] = &[
    udp(
        "169.254.169.254",
        53,
        "GCP's resolver (the metadata address)",
    ),
    tcp("169.254.169.254", 53, "GCP's resolver over TCP"),
    udp("169.254.169.253", 53, "AWS DNS (Route 53 Resolver)"),
    udp("fd00:ec2::253", 53, "AWS DNS over IPv6"),
    udp("169.254.169.123", 123, "AWS NTP (Time Sync Service)"),
    udp("fd00:ec2::123", 123, "AWS NTP over IPv6"),
    udp("169.254.20.10", 53, "NodeLocal DNSCache"),
    udp("168.63.129.16", 53, "Azure DNS"),
    tcp("168.63.129.16", 53, "Azure DNS over TCP"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::values::Cidr;

    #[test]
    fn names_are_unique_and_cidrs_valid() {
        for (i, d) in DEFAULT_BLOCKS.iter().enumerate() {
            assert!(d.cidr.parse::<Cidr>().is_ok(), "{}", d.cidr);
            assert!(
                !DEFAULT_BLOCKS[..i]
                    .iter()
                    .any(|e| e.name == d.name || e.cidr == d.cidr),
                "{} twice",
                d.name
            );
        }
        assert_eq!(by_name("metadata").unwrap().cidr, "169.254.169.254/32");
        for e in KNOWN_METADATA.iter().chain(KEEP_OPEN) {
            e.ip();
        }
    }
}
