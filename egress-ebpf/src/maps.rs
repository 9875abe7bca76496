//! The maps, pinned by name so they (and the counters and buckets in them)
//! outlive the loader: one `#[map]` static per entry of the common crate's
//! `for_each_map!` list, so the names, key and value types and sizes here
//! are the ones the loader checks.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};

/// One static per list entry; arrays drop the `u32` index the list names as
/// their key, the ring buffer both of its `()`.
macro_rules! kernel_map {
    ($(#[$doc:meta])* $name:ident, Array, $key:ty, $value:ty, $max:expr) => {
        $(#[$doc])*
        #[map]
        pub static $name: Array<$value> = Array::pinned($max, 0);
    };
    ($(#[$doc:meta])* $name:ident, PerCpuArray, $key:ty, $value:ty, $max:expr) => {
        $(#[$doc])*
        #[map]
        pub static $name: PerCpuArray<$value> = PerCpuArray::pinned($max, 0);
    };
    ($(#[$doc:meta])* $name:ident, HashMap, $key:ty, $value:ty, $max:expr) => {
        $(#[$doc])*
        #[map]
        pub static $name: HashMap<$key, $value> = HashMap::pinned($max, 0);
    };
    ($(#[$doc:meta])* $name:ident, PerCpuHashMap, $key:ty, $value:ty, $max:expr) => {
        $(#[$doc])*
        #[map]
        pub static $name: PerCpuHashMap<$key, $value> = PerCpuHashMap::pinned($max, 0);
    };
    ($(#[$doc:meta])* $name:ident, LpmTrie, $key:ty, $value:ty, $max:expr) => {
        $(#[$doc])*
        #[map]
        pub static $name: LpmTrie<$key, $value> = LpmTrie::pinned($max, 0);
    };
    ($(#[$doc:meta])* $name:ident, ProgArray, $key:ty, $value:ty, $max:expr) => {
        $(#[$doc])*
        #[map]
        pub static $name: ProgramArray = ProgramArray::pinned($max, 0);
    };
    ($(#[$doc:meta])* $name:ident, RingBuf, $key:ty, $value:ty, $max:expr) => {
        $(#[$doc])*
        #[map]
        pub static $name: RingBuf = RingBuf::pinned($max, 0);
    };
}

macro_rules! kernel_maps {
    ($( $(#[$doc:meta])* $name:ident : $kind:ident < $key:ty , $value:ty > = $max:expr ; )*) => {
        $( kernel_map!($(#[$doc])* $name, $kind, $key, $value, $max); )*
    };
}

egress_ebpf_common::for_each_map!(kernel_maps);
