//! Addresses used by [`crate::topology::Topology::docker_like`]. All of them
//! exist only inside the namespaces a test creates.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Name of the default Docker bridge in the "host" namespace.
pub const DOCKER0: &str = "docker0";
/// docker0's IPv4 address (gateway of the containers).
pub const DOCKER0_V4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
/// docker0's IPv4 subnet.
pub const DOCKER0_V4_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 17, 0, 0), 16);
/// docker0's IPv6 address (gateway of the containers).
pub const DOCKER0_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdead, 0, 0, 0, 0, 0, 1);
/// docker0's IPv6 subnet.
pub const DOCKER0_V6_NET: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd00, 0xdead, 0, 0, 0, 0, 0, 0), 64);

/// Uplink veth name on the host side (the cloud side is `eth0`).
pub const UPLINK: &str = "uplink";
/// Host end of the uplink (TEST-NET-1).
pub const UPLINK_HOST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Cloud end of the uplink.
pub const UPLINK_CLOUD_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Host end of the uplink, IPv6.
pub const UPLINK_HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// Cloud end of the uplink, IPv6.
pub const UPLINK_CLOUD_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

/// Name of the dummy interface in the cloud namespace holding the service
/// addresses below.
pub const CLOUD_SERVICES_IF: &str = "svc0";

/// Instance metadata (AWS, Azure, GCP, OCI, DigitalOcean, ...).
pub const IMDS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// ECS task metadata.
pub const ECS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// Alibaba Cloud metadata.
pub const ALIBABA_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// Oracle Cloud metadata (alternate address; in the loader's defaults).
pub const OCI_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 192);
/// Azure WireServer.
pub const AZURE_WIRESERVER_V4: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// An ordinary "internet" host (TEST-NET-2) used as SMTP sink / allowed target.
pub const SMTP_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
/// AWS IMDS over IPv6.
pub const IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// An ordinary IPv6 "internet" host (documentation prefix).
pub const SMTP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 0x25);

/// IPv4 addresses held by the cloud namespace (each routed from the host ns).
pub const CLOUD_V4: [Ipv4Addr; 6] = [
    IMDS_V4,
    ECS_V4,
    ALIBABA_V4,
    OCI_V4,
    AZURE_WIRESERVER_V4,
    SMTP_V4,
];
/// IPv6 addresses held by the cloud namespace (each routed from the host ns).
pub const CLOUD_V6: [Ipv6Addr; 2] = [IMDS_V6, SMTP_V6];

/// IPv4 address of the `i`-th container on docker0 (172.17.0.2, .3, ...).
pub fn container_v4(i: usize) -> Ipv4Addr {
    let n = u32::from(DOCKER0_V4_NET.0) + 2 + u32::try_from(i).expect("index");
    Ipv4Addr::from(n)
}

/// IPv6 address of the `i`-th container on docker0 (fd00:dead::2, ::3, ...).
pub fn container_v6(i: usize) -> Ipv6Addr {
    let n = u128::from(DOCKER0_V6_NET.0) + 2 + u128::try_from(i).expect("index");
    Ipv6Addr::from(n)
}
