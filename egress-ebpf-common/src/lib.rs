//! Shared between the classifier (`egress-ebpf`) and its loader (`egress-loader`):
//! the `#[repr(C)]` map keys and values, the one list of maps, counter ids,
//! and all the decision logic (parser, per-packet decision, rule matching,
//! token bucket) that the kernel and the host run unchanged.
#![no_std]

#[cfg(any(test, feature = "model"))]
extern crate alloc;

/// Declares a wire enum: a field-less enum whose values cross the kernel
/// boundary (a map index, a byte of a drop event), numbered 0, 1, 2... in
/// order (checked at compile time), each with the name userspace shows it
/// by. Generates `COUNT` (one more than the highest value: the size of the
/// map it indexes), `ALL` (every value, `ALL[v]` being `v`), `name()` and
/// `from_u8()`, all `const`.
macro_rules! wire_enum {
    (
        $(#[doc = $doc:literal])*
        #[repr($repr:ident)]
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal => $text:literal,
            )+
        }
    ) => {
        $(#[doc = $doc])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// One more than the highest value: the size of the map the
            /// values index.
            pub const COUNT: u32 = [$($value),+].len() as u32;
            /// Every value, in order: `ALL[v]` is `v`.
            pub const ALL: [$name; Self::COUNT as usize] = [$($name::$variant),+];

            /// The value as userspace names it (counters, events, metrics).
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value `v` is on the wire, if any.
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        const _: () = {
            let mut i = 0;
            while i < $name::ALL.len() {
                assert!($name::ALL[i] as usize == i, "wire values run 0, 1, 2... in order");
                i += 1;
            }
        };
    };
}

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
pub mod route;
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
