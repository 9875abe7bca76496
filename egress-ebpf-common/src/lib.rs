//! Shared between the classifier (`egress-ebpf`) and its loader (`egress-loader`):
//! the `#[repr(C)]` map keys and values, the one list of maps, counter ids,
//! and all the decision logic (parser, per-packet decision, rule matching,
//! token bucket) that the kernel and the host run unchanged.
#![no_std]

#[cfg(any(test, feature = "model"))]
extern crate alloc;

pub mod bucket;
pub mod config;
pub mod counters;
pub mod decide;
pub mod endpoint;
pub mod events;
pub mod hook;
pub mod logs;
pub mod maps;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod packet;
pub mod parse;
pub mod prefilter;
pub mod reply;
pub mod rules;
pub mod shortcut;
pub mod sockaddr;

/// Asserts at compile time that a shared type has exactly the expected size,
/// so neither side can grow hidden padding.
#[macro_export]
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is `#[repr(C)]`, `Copy`, holds only integers and
    // has explicit padding fields (checked by `assert_size!`).
    unsafe impl aya::Pod for crate::config::PolicyConfig {}
    unsafe impl aya::Pod for crate::counters::Counter {}
    unsafe impl aya::Pod for crate::rules::BlockRule {}
    unsafe impl aya::Pod for crate::rules::PortMatch {}
    unsafe impl aya::Pod for crate::events::DropEvent {}
    unsafe impl aya::Pod for crate::counters::IfaceCounters {}
    unsafe impl aya::Pod for crate::counters::IfaceSlot {}
    unsafe impl aya::Pod for crate::endpoint::Endpoint {}
    unsafe impl aya::Pod for crate::endpoint::ExceptionKey {}
    unsafe impl aya::Pod for crate::prefilter::Prefilter {}
}
