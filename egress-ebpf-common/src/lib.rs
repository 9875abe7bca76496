//! Shared between the classifier (`egress-ebpf`) and its loader (`egress-loader`):
//! the `#[repr(C)]` map keys and values, map names, counter ids, and the pure
//! decision logic (rule matching, token bucket) that both sides run unchanged.
#![no_std]

pub mod bucket;
pub mod config;
pub mod counters;
pub mod events;
pub mod maps;
pub mod packet;
pub mod rules;

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
}
