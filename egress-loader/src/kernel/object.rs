//! The classifier object, built by build.rs and embedded in the binary.

use std::collections::HashMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{Program, SchedClassifier},
};
use egress_ebpf_common::maps::{
    ENDPOINT_PROGRAM, PROGRAM, REPLY_PROGRAM, REPLY_PROGRAM_NAME, ROUTE_PROGRAM,
    ROUTE_PROGRAM_NAME, TUNNEL_L3_PROGRAM, TUNNEL_PROGRAM,
};

use crate::{
    error::{Error, ObjectError},
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
        return Err(ObjectError::NotEmbedded.into());
    }
    let prepared = layout::prepare(pins)?;
    std::fs::create_dir_all(pins.maps())?;
    std::fs::create_dir_all(pins.links())?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.maps())
        .load(OBJECT)?;
    for result in load_classifiers(
        &mut ebpf,
        &[
            REPLY_PROGRAM_NAME,
            ROUTE_PROGRAM_NAME,
            PROGRAM,
            ENDPOINT_PROGRAM,
            TUNNEL_PROGRAM,
            TUNNEL_L3_PROGRAM,
        ],
    ) {
        result?;
    }
    fill_slot(&mut ebpf, REPLY_PROGRAM_NAME, REPLY_PROGRAM)?;
    fill_slot(&mut ebpf, ROUTE_PROGRAM_NAME, ROUTE_PROGRAM)?;
    Ok((ebpf, prepared))
}

/// Loads the classifiers `names` into the kernel at once (see
/// [`load_parallel`]). Results in the order of `names`.
fn load_classifiers(ebpf: &mut Ebpf, names: &[&str]) -> Vec<Result<(), Error>> {
    load_parallel(ebpf, names, |name, prog| match prog {
        Some(Program::SchedClassifier(p)) => p.load().map_err(|source| Error::Program {
            context: format!("the kernel refused the classifier {name} (verifier)"),
            source,
        }),
        Some(_) => Err(ObjectError::NotAClassifier(name.into()).into()),
        None => Err(ObjectError::MissingProgram(name.into()).into()),
    })
}

/// Runs `load` on each program of `names` (`None`: not in the object), a
/// thread each, and returns what each returned, in the order of `names`.
/// The kernel's verifier takes most of a start (seconds for
/// `egress_endpoint` on a busy 2-core machine: docs/design.md, Endpoints)
/// and verifies privileged loads in parallel (its global lock is taken for
/// unprivileged ones only), so a start waits for the longest load rather
/// than for their sum.
pub fn load_parallel<T: Send>(
    ebpf: &mut Ebpf,
    names: &[&str],
    load: impl Fn(&str, Option<&mut Program>) -> T + Sync,
) -> Vec<T> {
    let mut programs: HashMap<&str, &mut Program> = ebpf.programs_mut().collect();
    let taken: Vec<(&str, Option<&mut Program>)> =
        names.iter().map(|n| (*n, programs.remove(n))).collect();
    let load = &load;
    std::thread::scope(|s| {
        let running: Vec<_> = taken
            .into_iter()
            .map(|(name, prog)| s.spawn(move || load(name, prog)))
            .collect();
        running
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Puts the (loaded) program `name` in slot 0 of the program array `map`,
/// where the classifiers tail-call it: the reply program (`REPLY_PROGRAM`)
/// to answer a reject, the route program (`ROUTE_PROGRAM`) to judge a
/// source route. The map is pinned, so the entry stays (a program array is
/// emptied when its last user reference goes) and a classifier already
/// attached calls this build's program from now on. Filled before any
/// classifier of this build is attached.
fn fill_slot(ebpf: &mut Ebpf, name: &str, map: &'static str) -> Result<(), Error> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| ObjectError::MissingProgram(name.into()))?
        .try_into()
        .map_err(|source| Error::Program {
            context: format!("program {name}"),
            source,
        })?;
    let fd = prog
        .fd()
        .map_err(|source| Error::Program {
            context: format!("program {name}"),
            source,
        })?
        .try_clone()
        .map_err(Error::Io)?;
    let array = ebpf.map_mut(map).ok_or(ObjectError::MissingMap(map))?;
    let mut slots: ProgramArray<&mut aya::maps::MapData> =
        ProgramArray::try_from(array).map_err(|e| Error::map(map, e))?;
    slots.set(0, &fd, 0).map_err(|e| Error::map(map, e))?;
    Ok(())
}

/// The bridges' classifier.
pub fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    program(ebpf, PROGRAM)
}

/// The classifier of each endpoint's (container's) veth.
pub fn endpoint_classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    program(ebpf, ENDPOINT_PROGRAM)
}

/// The classifier of a decapsulating device: `ip` for one that hands up
/// bare IP packets (no Ethernet header at its tc ingress).
pub fn tunnel_classifier(ebpf: &mut Ebpf, ip: bool) -> Result<&mut SchedClassifier, Error> {
    program(
        ebpf,
        if ip {
            TUNNEL_L3_PROGRAM
        } else {
            TUNNEL_PROGRAM
        },
    )
}

fn program<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut SchedClassifier, Error> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| ObjectError::MissingProgram(name.into()))?;
    prog.try_into().map_err(|source| Error::Program {
        context: format!("program {name}"),
        source,
    })
}
