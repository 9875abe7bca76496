//! The kernel side of the cgroup hooks (docs/design.md, Cgroup hooks): the
//! cgroup2 mount, the host's network namespace cookie, loading the cgroup
//! programs, attaching them to a cgroup as pinned links, swapping this
//! loader's programs into the links a previous one pinned, and detaching.
//!
//! A cgroup is named by its path relative to the cgroup2 mount, without a
//! leading `/` ("docker", "system.slice/docker-<id>.scope"); the root cgroup
//! is never attached to (it holds every process of the host).

use std::{
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkbAttachType, Program, links::FdLink},
};
use egress_ebpf_common::{
    hook::Hook,
    maps::{CGROUP_PROGRAMS, UDP_FALLBACK_PROGRAMS},
};
use serde::Serialize;

use crate::{
    error::{Error, ObjectError},
    kernel::pins::PinDir,
};

/// The cgroup2 (unified) hierarchy: cgroup BPF programs exist only there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFs {
    mount: PathBuf,
}

impl CgroupFs {
    /// The cgroup2 mount this process sees (`/proc/self/mountinfo`): at
    /// `/sys/fs/cgroup` on a cgroup v2 host, `/sys/fs/cgroup/unified` on a
    /// hybrid one; `None` on a cgroup v1-only host.
    pub fn find() -> Option<Self> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_mountinfo(&info)
    }

    /// The first cgroup2 mount of `mountinfo` whose root is the hierarchy's
    /// root (a bind mount of a sub-cgroup would hide the others).
    pub fn from_mountinfo(mountinfo: &str) -> Option<Self> {
        mountinfo.lines().find_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mut f = left.split_whitespace();
            let root = f.nth(3)?;
            let mountpoint = f.next()?;
            (fstype == "cgroup2" && root == "/").then(|| CgroupFs {
                mount: PathBuf::from(unescape_octal(mountpoint)),
            })
        })
    }

    pub fn at(mount: impl Into<PathBuf>) -> Self {
        CgroupFs {
            mount: mount.into(),
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The directory of cgroup `rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mount.join(rel)
    }

    /// The cgroup's id (the inode of its directory, what
    /// `bpf_get_current_cgroup_id` returns), if it exists.
    pub fn id(&self, rel: &str) -> Option<u64> {
        let meta = std::fs::metadata(self.path(rel)).ok()?;
        meta.is_dir().then(|| meta.ino())
    }

    /// The cgroup `pid` is in, relative to the mount (`/proc/PID/cgroup`'s
    /// `0::` line); `None` for a process gone or invisible.
    pub fn of_pid(pid: u32) -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| p.trim_matches('/').to_owned())
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A path [`normalize`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgroupPathError {
    #[error(
        "the root cgroup holds every process of the host (its own services included): \
         name the cgroup under which the engine creates containers"
    )]
    Root,
    #[error("{0:?}: not a cgroup path (empty, \".\" or \"..\" component)")]
    BadComponent(String),
}

/// Checks a cgroup path relative to the mount: not the root, no `.`/`..`
/// components. Returns it without leading or trailing `/`.
pub fn normalize(rel: &str) -> Result<String, CgroupPathError> {
    let trimmed = rel.trim_matches('/');
    if trimmed.is_empty() {
        return Err(CgroupPathError::Root);
    }
    if trimmed
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(CgroupPathError::BadComponent(rel.into()));
    }
    Ok(trimmed.to_owned())
}

/// `SO_NETNS_COOKIE` (Linux 5.14): the cookie of this process's network
/// namespace, which the cgroup hooks compare with their socket's.
pub fn host_netns_cookie() -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut cookie: u64 = 0;
        let mut len = size_of::<u64>() as libc::socklen_t;
        if libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(cookie)
    }
}

/// The pin file name of each hook's link.
pub const fn pin_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Connect4 => "connect4",
        Hook::Connect6 => "connect6",
        Hook::Sendmsg4 => "sendmsg4",
        Hook::Sendmsg6 => "sendmsg6",
        Hook::CgroupSkb => "skb_egress",
        Hook::Tc | Hook::Veth => "tc",
    }
}

/// Loads the cgroup programs into the kernel. A program the kernel refuses
/// (a helper its type may not call on this kernel) is reported, not fatal:
/// the bridges are filtered either way, and `status` says what is missing.
/// Where `cgroup_skb/egress` is refused, the sendmsg hooks are loaded to
/// judge UDP in its place ([`UDP_FALLBACK_PROGRAMS`]).
pub fn load_programs(ebpf: &mut Ebpf) -> Vec<(Hook, Result<(), HookLoadError>)> {
    let mut results = load_list(ebpf, &CGROUP_PROGRAMS);
    let skb_refused = results
        .iter()
        .any(|(h, r)| *h == Hook::CgroupSkb && r.is_err());
    if skb_refused {
        results.extend(load_list(ebpf, &UDP_FALLBACK_PROGRAMS));
    }
    results
}

/// Program names to treat as refused by the kernel, comma-separated: for
/// the tests of what an older kernel does (this machine's loads them all).
pub const REFUSE_ENV: &str = "EGRESS_TEST_REFUSE_PROGRAMS";

/// Why a cgroup program is not loaded: the daemon logs it and goes on
/// without that hook (`status` and `verify` say the hook is missing).
#[derive(Debug, thiserror::Error)]
pub enum HookLoadError {
    /// Named in [`REFUSE_ENV`] (the tests of an older kernel).
    #[error("not loaded: named in {REFUSE_ENV}")]
    RefusedByTest,
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("program {0} has an unexpected type")]
    UnexpectedType(String),
    /// The kernel refused it: its reason, cut to the verifier's last lines.
    /// (Not `#[source]`: the message is the kernel's reason itself.)
    #[error("{}", verifier_text(.cause))]
    Kernel {
        program: String,
        cause: aya::programs::ProgramError,
    },
}

fn load_list(ebpf: &mut Ebpf, list: &[(&str, Hook)]) -> Vec<(Hook, Result<(), HookLoadError>)> {
    let refuse = std::env::var(REFUSE_ENV).unwrap_or_default();
    let refused = |name: &str| refuse.split(',').any(|r| r.trim() == name);
    // At once, a thread each: the verifier is most of the cost
    // (kernel::object::load_parallel).
    let names: Vec<&str> = list.iter().map(|(name, _)| *name).collect();
    let kernel = |name: &str| {
        let program = name.to_owned();
        move |cause| HookLoadError::Kernel { program, cause }
    };
    let results = crate::kernel::object::load_parallel(ebpf, &names, |name, prog| match prog {
        _ if refused(name) => Err(HookLoadError::RefusedByTest),
        None => Err(ObjectError::MissingProgram(name.into()).into()),
        Some(Program::CgroupSockAddr(p)) => p.load().map_err(kernel(name)),
        Some(Program::CgroupSkb(p)) => p.load().map_err(kernel(name)),
        Some(_) => Err(HookLoadError::UnexpectedType(name.into())),
    });
    list.iter().map(|(_, hook)| *hook).zip(results).collect()
}

/// Every cgroup program this version may attach, the fallbacks included.
fn every_program() -> impl Iterator<Item = &'static (&'static str, Hook)> {
    CGROUP_PROGRAMS.iter().chain(UDP_FALLBACK_PROGRAMS.iter())
}

/// The kernel's reason, cut to what says it (the verifier's last lines).
fn verifier_text(e: &aya::programs::ProgramError) -> String {
    let text = match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            format!(
                "{io_error}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )
        }
        e => e.to_string(),
    };
    text.trim().to_owned()
}

fn is_loaded(ebpf: &Ebpf, name: &str) -> bool {
    ebpf.program(name).is_some_and(|p| p.fd().is_ok())
}

/// The hooks whose program is loaded.
pub fn loaded_hooks(ebpf: &Ebpf) -> Vec<Hook> {
    every_program()
        .filter(|(name, _)| is_loaded(ebpf, name))
        .map(|&(_, h)| h)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Attached,
    /// A previous loader's link now runs this program (BPF_LINK_UPDATE).
    Adopted,
}

/// What a pinned cgroup link is attached to, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub link_id: u32,
    pub program_id: u32,
    pub cgroup_id: u64,
}

/// The state of the link pinned for `hook` on cgroup `rel`.
pub fn pinned_link(pins: &PinDir, rel: &str, hook: Hook) -> Option<LinkState> {
    let fd = sys::obj_get(&pins.cgroup_link(rel, pin_name(hook))).ok()?;
    sys::link_info(&fd).ok()
}

/// A pinned link still attached to the cgroup that now has this path (a
/// removed and recreated cgroup has a new id; the old link is defunct).
pub fn live_link(pins: &PinDir, fs: &CgroupFs, rel: &str, hook: Hook) -> Option<LinkState> {
    let state = pinned_link(pins, rel, hook)?;
    (fs.id(rel) == Some(state.cgroup_id)).then_some(state)
}

/// A cgroup with pinned links, and which of them are live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupAttachment {
    /// Below the cgroup2 mount, without a leading `/`.
    pub cgroup: String,
    /// The hooks whose link is attached to the cgroup that has this path now.
    #[serde(serialize_with = "hook_names")]
    pub live: Vec<Hook>,
    /// Pinned but defunct (the cgroup was removed, or replaced).
    #[serde(serialize_with = "hook_names")]
    pub stale: Vec<Hook>,
    /// The programs the live links run.
    pub program_ids: Vec<u32>,
}

fn hook_names<S: serde::Serializer>(hooks: &[Hook], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(hooks.iter().map(|h| h.name()))
}

impl CgroupAttachment {
    /// Whether TCP and UDP are judged: `connect()` of both families, and
    /// unconnected UDP by `cgroup_skb` (or, where it cannot load, by both
    /// sendmsg hooks).
    pub fn judges_sockets(&self) -> bool {
        let live = |h: Hook| self.live.contains(&h);
        live(Hook::Connect4)
            && live(Hook::Connect6)
            && (live(Hook::CgroupSkb) || (live(Hook::Sendmsg4) && live(Hook::Sendmsg6)))
    }
}

/// Every cgroup with pinned links at `pins`, as the kernel has them now.
pub fn attachments(pins: &PinDir, fs: Option<&CgroupFs>) -> Vec<CgroupAttachment> {
    pins.pinned_cgroups()
        .into_iter()
        .map(|rel| {
            let mut a = CgroupAttachment {
                cgroup: rel.clone(),
                live: Vec::new(),
                stale: Vec::new(),
                program_ids: Vec::new(),
            };
            for &(_, hook) in every_program() {
                if !pins.cgroup_link(&rel, pin_name(hook)).exists() {
                    continue;
                }
                match fs.and_then(|fs| live_link(pins, fs, &rel, hook)) {
                    Some(state) => {
                        a.live.push(hook);
                        if !a.program_ids.contains(&state.program_id) {
                            a.program_ids.push(state.program_id);
                        }
                    }
                    None => a.stale.push(hook),
                }
            }
            a
        })
        .collect()
}

/// Attaches every loaded cgroup program to cgroup `rel`, or swaps it into
/// the link a previous run pinned there (no instant without the hook).
/// Fails if the cgroup does not exist.
pub fn attach(
    ebpf: &mut Ebpf,
    pins: &PinDir,
    fs: &CgroupFs,
    rel: &str,
) -> Result<Vec<(Hook, Outcome)>, Error> {
    let dir = fs.path(rel);
    let cgroup = File::open(&dir).map_err(|e| {
        Error::Io(io::Error::new(
            e.kind(),
            format!("cgroup {}: {e}", dir.display()),
        ))
    })?;
    let links = pins.cgroup_link_dir(rel);
    std::fs::create_dir_all(&links).map_err(|e| {
        Error::Io(io::Error::new(
            e.kind(),
            format!("creating {}: {e}", links.display()),
        ))
    })?;
    let mut done = Vec::new();
    for &(name, hook) in every_program() {
        if !is_loaded(ebpf, name) {
            continue;
        }
        let path = pins.cgroup_link(rel, pin_name(hook));
        if live_link(pins, fs, rel, hook).is_some() {
            let link = sys::obj_get(&path)?;
            let prog = ebpf.program(name).expect("loaded above");
            let fd = prog.fd().map_err(|source| Error::Program {
                context: format!("{name}: program fd"),
                source,
            })?;
            use std::os::fd::AsFd;
            sys::link_update(&link, fd.as_fd().as_raw_fd()).map_err(|e| {
                Error::Io(io::Error::new(
                    e.kind(),
                    format!("{rel}: replacing the program in the pinned {name} link: {e}"),
                ))
            })?;
            done.push((hook, Outcome::Adopted));
            continue;
        }
        if path.exists() {
            // Defunct: its cgroup went away and came back. Release it.
            std::fs::remove_file(&path)?;
        }
        let context = || format!("{rel}: attaching {name}");
        // `Single` is flags 0, which BPF_LINK_CREATE requires for cgroups
        // (EINVAL otherwise): a cgroup link is always attached as if with
        // BPF_F_ALLOW_MULTI (kernel/bpf/cgroup.c, cgroup_bpf_link_attach),
        // beside any other program on the cgroup, and inherited by the
        // cgroups created below it.
        let mode = CgroupAttachMode::Single;
        let program_error = |source| Error::Program {
            context: context(),
            source,
        };
        let link_error = |source| Error::Link {
            context: context(),
            source,
        };
        let link: FdLink = match ebpf.program_mut(name) {
            Some(Program::CgroupSockAddr(p)) => {
                let id = p.attach(&cgroup, mode).map_err(program_error)?;
                let link = p.take_link(id).map_err(program_error)?;
                link.try_into().map_err(link_error)?
            }
            Some(Program::CgroupSkb(p)) => {
                let id = p
                    .attach(&cgroup, CgroupSkbAttachType::Egress, mode)
                    .map_err(program_error)?;
                let link = p.take_link(id).map_err(program_error)?;
                link.try_into().map_err(link_error)?
            }
            _ => continue,
        };
        link.pin(&path).map_err(|source| Error::Pin {
            context: format!("{rel}: pinning the {name} link at {}", path.display()),
            source,
        })?;
        done.push((hook, Outcome::Attached));
    }
    // sendmsg links an earlier run pinned (an earlier version attached them
    // everywhere) where cgroup_skb now judges UDP: released only once the
    // programs above are attached (a moment of judging twice, never one of
    // judging nothing).
    let skb_loaded = CGROUP_PROGRAMS
        .iter()
        .any(|&(name, hook)| hook == Hook::CgroupSkb && is_loaded(ebpf, name));
    if skb_loaded {
        for &(name, hook) in &UDP_FALLBACK_PROGRAMS {
            let path = pins.cgroup_link(rel, pin_name(hook));
            if !is_loaded(ebpf, name) && path.exists() {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(done)
}

/// Unpins every link pinned for cgroup `rel` (the kernel detaches a link
/// when its last reference goes) and removes its directory. Returns
/// whether anything was removed.
pub fn detach(pins: &PinDir, rel: &str) -> Result<bool, Error> {
    let dir = pins.cgroup_link_dir(rel);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(false);
    };
    let mut removed = false;
    for e in entries.flatten() {
        std::fs::remove_file(e.path())?;
        removed = true;
    }
    std::fs::remove_dir(&dir)?;
    Ok(removed)
}

/// Raw bpf(2) commands aya 0.14 does not offer for cgroup links: opening a
/// pinned link, reading its cgroup, swapping its program.
mod sys {
    use std::{
        ffi::CString,
        io,
        os::{
            fd::{AsRawFd, FromRawFd, OwnedFd},
            unix::ffi::OsStrExt,
        },
        path::Path,
    };

    use super::LinkState;

    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_UPDATE: libc::c_long = 29;

    /// `union bpf_attr`, zeroed: the kernel requires every byte it does not
    /// read for the command to be zero.
    #[repr(C, align(8))]
    struct Attr([u8; 128]);

    impl Attr {
        fn new() -> Self {
            Attr([0; 128])
        }
        fn u32_at(&mut self, off: usize, v: u32) {
            self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        }
        fn u64_at(&mut self, off: usize, v: u64) {
            self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        }
    }

    fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
        // SAFETY: attr is a properly sized, aligned, initialized bpf_attr.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut Attr,
                size_of::<Attr>() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// BPF_OBJ_GET: the object pinned at `path`.
    pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut attr = Attr::new();
        attr.u64_at(0, c.as_ptr() as u64);
        let fd = bpf(BPF_OBJ_GET, &mut attr)?;
        // SAFETY: BPF_OBJ_GET returned a new descriptor we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// BPF_OBJ_GET_INFO_BY_FD on a cgroup link: `struct bpf_link_info`'s
    /// type, id, prog_id, then (at offset 16, the union) cgroup_id.
    pub fn link_info(link: &OwnedFd) -> io::Result<LinkState> {
        #[repr(C, align(8))]
        struct Info([u8; 32]);
        let mut info = Info([0; 32]);
        let mut attr = Attr::new();
        attr.u32_at(0, link.as_raw_fd() as u32);
        attr.u32_at(4, size_of::<Info>() as u32);
        attr.u64_at(8, info.0.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        let u32_at = |o: usize| u32::from_ne_bytes(info.0[o..o + 4].try_into().expect("4 bytes"));
        const BPF_LINK_TYPE_CGROUP: u32 = 3;
        if u32_at(0) != BPF_LINK_TYPE_CGROUP {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a cgroup link (type {})", u32_at(0)),
            ));
        }
        Ok(LinkState {
            link_id: u32_at(4),
            program_id: u32_at(8),
            cgroup_id: u64::from_ne_bytes(info.0[16..24].try_into().expect("8 bytes")),
        })
    }

    /// BPF_LINK_UPDATE: the link runs `prog_fd` from now on (atomic).
    pub fn link_update(link: &OwnedFd, prog_fd: i32) -> io::Result<()> {
        let mut attr = Attr::new();
        attr.u32_at(0, link.as_raw_fd() as u32);
        attr.u32_at(4, prog_fd as u32);
        bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(
            CgroupFs::from_mountinfo(hybrid).unwrap().mount(),
            Path::new("/sys/fs/cgroup/unified")
        );
        let v2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            CgroupFs::from_mountinfo(v2).unwrap().mount(),
            Path::new("/sys/fs/cgroup")
        );
        // A container's bind of its own sub-cgroup does not count.
        let sub = "40 1 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(CgroupFs::from_mountinfo(sub), None);
        let v1 = "27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(CgroupFs::from_mountinfo(v1), None);
        let spaced = "26 25 0:24 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            CgroupFs::from_mountinfo(spaced).unwrap().mount(),
            Path::new("/mnt/cg two")
        );
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(normalize("/docker").unwrap(), "docker");
        assert_eq!(normalize("system.slice/").unwrap(), "system.slice");
        assert!(normalize("/").is_err());
        assert!(normalize("").is_err());
        assert!(normalize("a/../b").is_err());
        assert!(normalize("a//b").is_err());
    }

    /// Each reason prints what the `String` it replaced printed.
    #[test]
    fn load_errors_print_the_old_messages() {
        for (e, want) in [
            (
                HookLoadError::RefusedByTest,
                "not loaded: named in EGRESS_TEST_REFUSE_PROGRAMS",
            ),
            (
                ObjectError::MissingProgram("egress_connect4".into()).into(),
                "program egress_connect4 missing from the object",
            ),
            (
                HookLoadError::UnexpectedType("egress_connect4".into()),
                "program egress_connect4 has an unexpected type",
            ),
            (
                HookLoadError::Kernel {
                    program: "egress_cgroup_skb".into(),
                    cause: aya::programs::ProgramError::NotLoaded,
                },
                "the program is not loaded",
            ),
        ] {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn udp_is_judged_by_cgroup_skb_or_by_both_sendmsg_hooks() {
        let with = |live: &[Hook]| CgroupAttachment {
            cgroup: "docker".into(),
            live: live.to_vec(),
            stale: Vec::new(),
            program_ids: Vec::new(),
        };
        use Hook::*;
        assert!(with(&[Connect4, Connect6, CgroupSkb]).judges_sockets());
        // Linux < 6.15: cgroup_skb refused, the fallback in its place.
        assert!(with(&[Connect4, Connect6, Sendmsg4, Sendmsg6]).judges_sockets());
        assert!(!with(&[Connect4, Connect6, Sendmsg4]).judges_sockets());
        assert!(!with(&[Connect4, Connect6]).judges_sockets());
        assert!(!with(&[Connect4, CgroupSkb, Sendmsg4, Sendmsg6]).judges_sockets());
    }
}
