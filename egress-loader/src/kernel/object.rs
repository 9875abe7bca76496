//! The classifier object, built by build.rs and embedded in the binary.

use aya::{Ebpf, EbpfLoader, programs::SchedClassifier};
use egress_ebpf_common::maps::PROGRAM;

use crate::{
    error::Error,
    kernel::{maps, pins::PinDir},
};

/// The eBPF object; empty when build.rs skipped the eBPF build (clippy/check
/// without bpf-linker), in which case loading says so.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-ebpf"));

/// Loads the object with every map pinned under `pins` (existing pins are
/// reused: counters and buckets carry on), and loads the classifier into the
/// kernel. Nothing is attached yet.
pub fn load(pins: &PinDir) -> Result<Ebpf, Error> {
    if OBJECT.is_empty() {
        return Err(Error::Object(
            "this binary was built without the eBPF object (bpf-linker was missing); \
             build it with `cargo xtask build`"
                .into(),
        ));
    }
    std::fs::create_dir_all(pins.maps())?;
    std::fs::create_dir_all(pins.links())?;
    maps::check_pinned_layout(pins)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.maps())
        .load(OBJECT)?;
    let prog = classifier(&mut ebpf)?;
    prog.load().map_err(|source| Error::Program {
        context: "the kernel refused the classifier (verifier)".into(),
        source,
    })?;
    Ok(ebpf)
}

pub fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    let prog = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| Error::Object(format!("program {PROGRAM} missing from the object")))?;
    prog.try_into().map_err(|source| Error::Program {
        context: format!("program {PROGRAM}"),
        source,
    })
}
