//! Attaching the classifier to the ingress hook of a bridge (where its
//! containers' egress enters the host), adopting what a previous loader left,
//! and removing it.
//!
//! TCX (Linux 6.6+) links are pinned under `<pin dir>/links/<ifname>`, so the
//! filter keeps running after the loader exits or dies. On older kernels the
//! legacy clsact/netlink filter is used; it lives in the kernel until removed.

use std::{io, str::FromStr};

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
    util::KernelVersion,
};
use egress_ebpf_common::maps::{ENDPOINT_PROGRAM, PROGRAM, TUNNEL_L3_PROGRAM, TUNNEL_PROGRAM};
use serde::Serialize;

use crate::{
    error::Error,
    kernel::{pins::PinDir, system::TCX_SINCE},
};

/// Priority and handle of our legacy tc filter: priority 1 runs before
/// filters that took the default priority.
pub const NETLINK_PRIORITY: u16 = 1;
pub const NETLINK_HANDLE: TcHandle = TcHandle::new(0, 0xe9e5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// TCX where the kernel has it (6.6+), netlink otherwise.
    Auto,
    Tcx,
    Netlink,
}

/// A text that names no [`AttachMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an attach mode: use auto, tcx or netlink")]
pub struct UnknownAttachMode(pub String);

impl FromStr for AttachMode {
    type Err = UnknownAttachMode;
    fn from_str(s: &str) -> Result<Self, UnknownAttachMode> {
        match s {
            "auto" => Ok(Self::Auto),
            "tcx" => Ok(Self::Tcx),
            "netlink" => Ok(Self::Netlink),
            _ => Err(UnknownAttachMode(s.into())),
        }
    }
}

impl AttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Tcx => "tcx",
            AttachMode::Netlink => "netlink",
        }
    }

    pub fn resolve(self) -> AttachMode {
        match self {
            AttachMode::Auto if tcx_supported() => AttachMode::Tcx,
            AttachMode::Auto => AttachMode::Netlink,
            m => m,
        }
    }
}

fn tcx_supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= TCX_SINCE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachOutcome {
    /// Newly attached.
    Attached,
    /// A previous loader's attachment now runs this program (atomic replace).
    Adopted,
}

fn program_err(context: String) -> impl FnOnce(aya::programs::ProgramError) -> Error {
    move |source| Error::Program { context, source }
}

/// Attaches `prog` to `ifname`'s ingress, or swaps it into the attachment a
/// previous run left there. Never leaves the interface unfiltered in between.
pub fn attach(
    prog: &mut SchedClassifier,
    pins: &PinDir,
    ifname: &str,
    mode: AttachMode,
) -> Result<AttachOutcome, Error> {
    match mode.resolve() {
        AttachMode::Netlink => attach_netlink(prog, ifname),
        _ => attach_tcx(prog, pins, ifname),
    }
}

/// The program id running in a pinned link, if the link is still attached to
/// the interface that now has this name (a recreated bridge has a new ifindex
/// and the old link is defunct).
pub fn live_pinned_link(pins: &PinDir, ifname: &str) -> Option<(FdLink, u32)> {
    let pinned = PinnedLink::from_pin(pins.link(ifname)).ok()?;
    let link = FdLink::from(pinned);
    let prog_id = link.info().ok()?.program_id();
    let (_, progs) = SchedClassifier::query_tcx(ifname, TcAttachType::Ingress).ok()?;
    progs
        .iter()
        .any(|p| p.id() == prog_id)
        .then_some((link, prog_id))
}

fn attach_tcx(
    prog: &mut SchedClassifier,
    pins: &PinDir,
    ifname: &str,
) -> Result<AttachOutcome, Error> {
    let path = pins.link(ifname);
    if let Some((link, _)) = live_pinned_link(pins, ifname) {
        let link = SchedClassifierLink::try_from(link).map_err(|source| Error::Link {
            context: format!("{ifname}: pinned link"),
            source,
        })?;
        let id = prog.attach_to_link(link).map_err(program_err(format!(
            "{ifname}: replacing the program in the pinned link"
        )))?;
        // The pin still names the same kernel link; drop our handle only.
        drop(
            prog.take_link(id)
                .map_err(program_err(format!("{ifname}: link")))?,
        );
        return Ok(AttachOutcome::Adopted);
    }
    if path.exists() {
        // Defunct: its interface went away. Release it before the new attach.
        std::fs::remove_file(&path)?;
    }
    // First in the chain: a later program's terminal verdict (TC_ACT_OK) must
    // not let traffic skip the filter.
    let id = prog
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )
        .map_err(program_err(format!("{ifname}: TCX attach to ingress")))?;
    let link = prog
        .take_link(id)
        .map_err(program_err(format!("{ifname}: link")))?;
    let fd_link: FdLink = link.try_into().map_err(|source| Error::Link {
        context: format!("{ifname}: TCX link"),
        source,
    })?;
    fd_link.pin(&path).map_err(|source| Error::Pin {
        context: format!("{ifname}: pinning the link at {}", path.display()),
        source,
    })?;
    Ok(AttachOutcome::Attached)
}

fn attach_netlink(prog: &mut SchedClassifier, ifname: &str) -> Result<AttachOutcome, Error> {
    if let Err(e) = tc::qdisc_add_clsact(ifname) {
        // EEXIST: the qdisc is there already (ours or someone else's): fine.
        let exists =
            matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
        if !exists {
            return Err(Error::Program {
                context: format!("{ifname}: adding the clsact qdisc"),
                source: e.into(),
            });
        }
    }
    let options = || NlOptions {
        priority: NETLINK_PRIORITY,
        handle: NETLINK_HANDLE,
        classid: None,
    };
    let (id, outcome) = match prog.attach_with_options(
        ifname,
        TcAttachType::Ingress,
        TcAttachOptions::Netlink(options()),
    ) {
        Ok(id) => (id, AttachOutcome::Attached),
        Err(_) => {
            // Our filter is there from a previous run: replace it in place
            // (one netlink request, so the hook is never empty).
            let existing = SchedClassifierLink::attached(
                ifname,
                TcAttachType::Ingress,
                NETLINK_PRIORITY,
                NETLINK_HANDLE,
                None,
            )?;
            let id = prog.attach_to_link(existing).map_err(program_err(format!(
                "{ifname}: replacing the netlink filter"
            )))?;
            (id, AttachOutcome::Adopted)
        }
    };
    let link = prog
        .take_link(id)
        .map_err(program_err(format!("{ifname}: link")))?;
    // Dropping the link object would delete the filter; it must outlive us.
    std::mem::forget(link);
    Ok(outcome)
}

/// Removes the filter from `ifname`: its pinned TCX link, and our legacy
/// filter if there is one. Returns whether anything was removed.
pub fn detach(pins: &PinDir, ifname: &str) -> Result<bool, Error> {
    let mut removed = false;
    let path = pins.link(ifname);
    if path.exists() {
        // Unpinning drops the last reference: the kernel detaches the link.
        match PinnedLink::from_pin(&path) {
            Ok(p) => drop(p.unpin()?),
            Err(_) => std::fs::remove_file(&path)?,
        }
        removed = true;
    }
    if nix::net::if_::if_nametoindex(ifname).is_ok() {
        // A bridge's filter, an endpoint's (a container's veth), a tunnel's.
        for program in [PROGRAM, ENDPOINT_PROGRAM, TUNNEL_PROGRAM, TUNNEL_L3_PROGRAM] {
            match tc::qdisc_detach_program(ifname, TcAttachType::Ingress, program) {
                Ok(()) => removed = true,
                Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
                // No clsact qdisc on this interface: no legacy filter of ours either.
                Err(e) => log::debug!("{ifname}: no legacy filter to remove ({e})"),
            }
        }
    }
    Ok(removed)
}

/// `detach`: every link and legacy filter we own, then every pin.
pub fn detach_all(pins: &PinDir) -> Result<String, Error> {
    let mut links = 0;
    for name in pins.pinned_links() {
        if detach(pins, &name)? {
            links += 1;
        }
    }
    // Legacy filters carry no pin: look on every interface.
    for (name, _) in interfaces() {
        if detach(pins, &name)? {
            links += 1;
        }
    }
    let mut cgroups = 0;
    for rel in pins.pinned_cgroups() {
        if crate::kernel::cgroup::detach(pins, &rel)? {
            cgroups += 1;
        }
    }
    // The maps of every layout pinned here, this build's and any other.
    let mut maps = 0;
    let mut dirs = vec![pins.links(), pins.cgroup_links()];
    for version in pins.pinned_layouts() {
        let dir = pins.layout_dir(version);
        for e in std::fs::read_dir(&dir)?.flatten() {
            std::fs::remove_file(e.path())?;
            maps += 1;
        }
        dirs.push(dir);
    }
    dirs.push(pins.root().to_path_buf());
    for d in dirs {
        if d.exists() {
            std::fs::remove_dir(&d).map_err(|e| {
                Error::Io(io::Error::new(
                    e.kind(),
                    format!("removing {}: {e}", d.display()),
                ))
            })?;
        }
    }
    Ok(format!(
        "detached from {links} interface(s) and {cgroups} cgroup(s), removed {maps} pinned map(s) and {}",
        pins.root().display()
    ))
}

/// Interface names in this network namespace.
pub fn interfaces() -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .map(|i| (i.name().to_string_lossy().into_owned(), i.index()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
