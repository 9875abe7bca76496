//! The endpoint layer: what exists on this host that sends traffic, as the
//! container engine and the kernel say.
//!
//! ```text
//! identity  Container, and the Identity trait: who holds a source address
//! engine    the Docker Engine API: container inventory and identity
//! veth      the containers' veths on the filtered bridges (the endpoints)
//! ```

pub mod engine;
pub mod identity;
pub mod veth;
