//! The endpoint layer: what exists on this host that sends traffic, as the
//! container engine and the kernel say.
//!
//! ```text
//! identity    Container, and the Identity trait: who holds a source address
//! engine      the Docker Engine API: container inventory and identity
//! veth        the containers' veths on the filtered bridges (the endpoints)
//! tunnel      the decapsulating devices (vxlan, geneve, gre, ipip, tun...), by link kind
//! networks    the engine's networks: bridge interfaces, what the filter cannot see
//! containers  the running containers as coverage needs them (mode, networks, cgroup)
//! cgroup      where the cgroup hooks attach; which container a cgroup is
//! coverage    which hook filters each container, or why none does
//! ```

pub mod cgroup;
pub mod containers;
pub mod coverage;
pub mod engine;
pub mod identity;
pub mod networks;
pub mod tunnel;
pub mod veth;
