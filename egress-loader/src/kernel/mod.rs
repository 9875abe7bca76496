//! The kernel layer: the embedded object, the pinned maps and links, attach
//! and detach, rtnetlink, what the host must provide, and the clock the
//! classifier stamps with. Nothing here knows what a policy means.

pub mod attach;
pub mod cgroup;
pub mod clock;
pub mod layout;
pub mod maps;
pub mod netlink;
pub mod object;
pub mod pins;
pub mod runtime;
pub mod system;
