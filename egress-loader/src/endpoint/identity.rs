//! Who sent a packet: the container behind a source address, when an
//! engine can say.

use std::net::IpAddr;

use serde::Serialize;

/// Who sent a packet, when a container engine can say.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub id: String,
    pub image: String,
    pub network: String,
}

/// Maps a source address to the container that holds it.
pub trait Identity: Send + Sync {
    fn lookup(&self, addr: IpAddr) -> Option<Container>;
}

/// No engine: events carry addresses only.
pub struct AddressesOnly;

impl Identity for AddressesOnly {
    fn lookup(&self, _: IpAddr) -> Option<Container> {
        None
    }
}
