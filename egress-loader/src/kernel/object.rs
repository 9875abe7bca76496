//! The classifier object, built by build.rs and embedded in the binary.

use aya::{Ebpf, EbpfLoader, programs::SchedClassifier};
use egress_ebpf_common::maps::{ENDPOINT_PROGRAM, PROGRAM};

use crate::{
    error::Error,
    kernel::{
        layout::{self, Prepared},
        pins::PinDir,
    },
};

/// The eBPF object; empty when build.rs skipped the eBPF build (clippy/check
/// without bpf-linker), in which case loading says so.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-ebpf"));

/// Loads the object with every map pinned under `pins` (existing pins of
/// this layout are reused: counters and buckets carry on; an older layout's
/// state maps are carried over, see `kernel::layout`), and loads the
/// classifier into the kernel. Nothing is attached yet. A newer layout is
/// refused before anything changes.
pub fn load(pins: &PinDir) -> Result<(Ebpf, Prepared), Error> {
    if OBJECT.is_empty() {
        return Err(Error::Object(
            "this binary was built without the eBPF object (bpf-linker was missing); \
             build it with `cargo xtask build`"
                .into(),
        ));
    }
    let prepared = layout::prepare(pins)?;
    std::fs::create_dir_all(pins.maps())?;
    std::fs::create_dir_all(pins.links())?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.maps())
        .load(OBJECT)?;
    for name in [PROGRAM, ENDPOINT_PROGRAM] {
        program(&mut ebpf, name)?
            .load()
            .map_err(|source| Error::Program {
                context: format!("the kernel refused the classifier {name} (verifier)"),
                source,
            })?;
    }
    Ok((ebpf, prepared))
}

/// The bridges' classifier.
pub fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    program(ebpf, PROGRAM)
}

/// The classifier of each endpoint's (container's) veth.
pub fn endpoint_classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    program(ebpf, ENDPOINT_PROGRAM)
}

fn program<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut SchedClassifier, Error> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Object(format!("program {name} missing from the object")))?;
    prog.try_into().map_err(|source| Error::Program {
        context: format!("program {name}"),
        source,
    })
}
