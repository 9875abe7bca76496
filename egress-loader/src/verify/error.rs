//! Why `verify` could not probe a bridge: each ends as one problem line of
//! that bridge's report, naming the step that failed and the cause.

use std::{fmt, io, net::Ipv4Addr, time::Duration};

use crate::error::Error;

/// Why a bridge's probe (its namespace, its veth, its SYNs) could not say
/// whether the bridge filters.
#[derive(Debug, thiserror::Error)]
pub enum BridgeProbeError {
    /// No netlink socket could be opened.
    #[error("netlink: {0}")]
    Connection(io::Error),
    /// A netlink request failed.
    #[error("{step}: {cause}")]
    Netlink {
        step: NetlinkStep,
        cause: rtnetlink::Error,
    },
    /// A network namespace could not be opened (as a file).
    #[error("{step}: {cause}")]
    OpenNamespace {
        step: NamespaceStep,
        cause: io::Error,
    },
    /// Creating, entering or leaving a network namespace failed.
    #[error("{step}: {cause}")]
    Namespace {
        step: NamespaceStep,
        cause: nix::Error,
    },
    /// The probe thread's own runtime could not be built.
    #[error("{0}")]
    Runtime(io::Error),
    #[error("the interface is gone")]
    InterfaceGone,
    #[error("not a bridge: verify plugs its probe into a bridge")]
    NotABridge,
    #[error("no IPv4 address on the bridge: nowhere to route a probe")]
    NoBridgeAddress,
    #[error("no free address for the probe in the bridge's subnet")]
    NoFreeAddress,
    #[error("probe link missing")]
    ProbeLinkMissing,
    #[error("the probe's link did not come up within {0:?}")]
    LinkNotUp(Duration),
    #[error("the bridge does not forward on the probe's port {port} after {waited:?}")]
    NotForwarding { port: String, waited: Duration },
    #[error("metadata probe: {0}")]
    MetadataProbe(io::Error),
    #[error("SMTP probe: {0}")]
    SmtpProbe(io::Error),
    #[error("listing veths: {0}")]
    ListVeths(io::Error),
    /// The pinned counters or endpoints could not be read.
    #[error(transparent)]
    Maps(#[from] Error),
    #[error("the probe thread panicked")]
    ThreadPanicked,
}

/// What a failed netlink request was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkStep {
    /// The bridge's link.
    ReadLink,
    ReadAddresses,
    ReadNeighbours,
    /// The probe's veth, by its bridge end's name.
    CreateVeth(String),
    /// The probe's end, `eth0` in its namespace.
    ProbeLink,
    AddAddress {
        address: Ipv4Addr,
        prefix: u8,
    },
    ProbeLinkUp,
    DefaultRoute(Ipv4Addr),
    /// The bridge end, as the bridge's port.
    BridgePort(String),
}

impl fmt::Display for NetlinkStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkStep::ReadLink => f.write_str("reading the link"),
            NetlinkStep::ReadAddresses => f.write_str("reading addresses"),
            NetlinkStep::ReadNeighbours => f.write_str("reading the neighbour table"),
            NetlinkStep::CreateVeth(veth) => write!(f, "creating veth {veth} on the bridge"),
            NetlinkStep::ProbeLink => f.write_str("probe link"),
            NetlinkStep::AddAddress { address, prefix } => write!(f, "adding {address}/{prefix}"),
            NetlinkStep::ProbeLinkUp => f.write_str("probe link up"),
            NetlinkStep::DefaultRoute(gateway) => write!(f, "default route via {gateway}"),
            NetlinkStep::BridgePort(veth) => write!(f, "bridge port {veth}"),
        }
    }
}

/// A step between the host's network namespace and the probe's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceStep {
    /// Opening the probing thread's (the host's) namespace, to come back.
    OpenHost,
    Create,
    OpenProbe,
    ReturnToHost,
    EnterProbe,
}

impl fmt::Display for NamespaceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamespaceStep::OpenHost => "opening this thread's network namespace",
            NamespaceStep::Create => "creating the probe's network namespace",
            NamespaceStep::OpenProbe => "opening the probe's network namespace",
            NamespaceStep::ReturnToHost => "returning to the host's network namespace",
            NamespaceStep::EnterProbe => "entering the probe's network namespace",
        })
    }
}

impl BridgeProbeError {
    /// For `map_err` on a netlink request.
    pub fn netlink(step: NetlinkStep) -> impl FnOnce(rtnetlink::Error) -> Self {
        move |cause| BridgeProbeError::Netlink { step, cause }
    }

    /// For `map_err` on `unshare`/`setns`.
    pub fn namespace(step: NamespaceStep) -> impl FnOnce(nix::Error) -> Self {
        move |cause| BridgeProbeError::Namespace { step, cause }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error prints what the `String` it replaced printed.
    #[test]
    fn probe_errors_print_the_old_messages() {
        let io = || io::Error::other("x");
        let nl = || rtnetlink::Error::RequestFailed;
        let eperm = nix::Error::EPERM;
        let ns = |step| BridgeProbeError::namespace(step)(eperm);
        let step = |step| BridgeProbeError::netlink(step)(nl());
        let failed = nl().to_string();
        for (e, want) in [
            (BridgeProbeError::Connection(io()), "netlink: x".to_owned()),
            (
                step(NetlinkStep::ReadLink),
                format!("reading the link: {failed}"),
            ),
            (
                step(NetlinkStep::ReadAddresses),
                format!("reading addresses: {failed}"),
            ),
            (
                step(NetlinkStep::ReadNeighbours),
                format!("reading the neighbour table: {failed}"),
            ),
            (
                step(NetlinkStep::CreateVeth("egvb1x0".into())),
                format!("creating veth egvb1x0 on the bridge: {failed}"),
            ),
            (
                step(NetlinkStep::ProbeLink),
                format!("probe link: {failed}"),
            ),
            (
                step(NetlinkStep::AddAddress {
                    address: Ipv4Addr::new(172, 17, 255, 254),
                    prefix: 16,
                }),
                format!("adding 172.17.255.254/16: {failed}"),
            ),
            (
                step(NetlinkStep::ProbeLinkUp),
                format!("probe link up: {failed}"),
            ),
            (
                step(NetlinkStep::DefaultRoute(Ipv4Addr::new(172, 17, 0, 1))),
                format!("default route via 172.17.0.1: {failed}"),
            ),
            (
                step(NetlinkStep::BridgePort("egvb1x0".into())),
                format!("bridge port egvb1x0: {failed}"),
            ),
            (
                BridgeProbeError::OpenNamespace {
                    step: NamespaceStep::OpenHost,
                    cause: io(),
                },
                "opening this thread's network namespace: x".into(),
            ),
            (
                BridgeProbeError::OpenNamespace {
                    step: NamespaceStep::OpenProbe,
                    cause: io(),
                },
                "opening the probe's network namespace: x".into(),
            ),
            (
                ns(NamespaceStep::Create),
                "creating the probe's network namespace: EPERM: Operation not permitted".into(),
            ),
            (
                ns(NamespaceStep::ReturnToHost),
                "returning to the host's network namespace: EPERM: Operation not permitted".into(),
            ),
            (
                ns(NamespaceStep::EnterProbe),
                "entering the probe's network namespace: EPERM: Operation not permitted".into(),
            ),
            (BridgeProbeError::Runtime(io()), "x".into()),
            (
                BridgeProbeError::InterfaceGone,
                "the interface is gone".into(),
            ),
            (
                BridgeProbeError::NotABridge,
                "not a bridge: verify plugs its probe into a bridge".into(),
            ),
            (
                BridgeProbeError::NoBridgeAddress,
                "no IPv4 address on the bridge: nowhere to route a probe".into(),
            ),
            (
                BridgeProbeError::NoFreeAddress,
                "no free address for the probe in the bridge's subnet".into(),
            ),
            (
                BridgeProbeError::ProbeLinkMissing,
                "probe link missing".into(),
            ),
            (
                BridgeProbeError::LinkNotUp(Duration::from_secs(5)),
                "the probe's link did not come up within 5s".into(),
            ),
            (
                BridgeProbeError::NotForwarding {
                    port: "egvb1x0".into(),
                    waited: Duration::from_secs(35),
                },
                "the bridge does not forward on the probe's port egvb1x0 after 35s".into(),
            ),
            (
                BridgeProbeError::MetadataProbe(io()),
                "metadata probe: x".into(),
            ),
            (BridgeProbeError::SmtpProbe(io()), "SMTP probe: x".into()),
            (BridgeProbeError::ListVeths(io()), "listing veths: x".into()),
            (
                Error::NotLoaded("/sys/fs/bpf/egress".into()).into(),
                Error::NotLoaded("/sys/fs/bpf/egress".into()).to_string(),
            ),
            (
                BridgeProbeError::ThreadPanicked,
                "the probe thread panicked".into(),
            ),
        ] {
            assert_eq!(e.to_string(), want);
        }
    }
}
