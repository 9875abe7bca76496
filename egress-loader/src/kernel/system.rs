//! What the host must provide: a kernel at or above the floor, capabilities,
//! a bpf filesystem, one loader per pin dir.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::util::KernelVersion;

use crate::{
    error::{BpffsError, Error, KernelTooOld},
    kernel::pins,
};

/// A kernel feature the classifier cannot run without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeature {
    pub name: &'static str,
    /// The first Linux release that has it.
    pub since: KernelVersion,
    /// What the filter uses it for.
    pub used_for: &'static str,
}

/// Everything the classifier needs from the kernel, newest first. The floor
/// is the newest of them.
pub const KERNEL_FEATURES: [KernelFeature; 3] = [
    KernelFeature {
        name: "BPF_CMPXCHG (atomic compare-and-exchange with fetch)",
        since: KernelVersion::new(5, 12, 0),
        used_for: "the SMTP bucket shared by every CPU",
    },
    KernelFeature {
        name: "bpf_ktime_get_coarse_ns",
        since: KernelVersion::new(5, 11, 0),
        used_for: "the bucket's cheap refusals and the drop-event budget",
    },
    KernelFeature {
        name: "the BPF ring buffer",
        since: KernelVersion::new(5, 8, 0),
        used_for: "drop events",
    },
];

/// The oldest kernel the filter runs on.
pub const KERNEL_FLOOR: KernelVersion = KERNEL_FEATURES[0].since;

/// TCX, the link-based tc attach (Linux 6.6, commit e420bed02507). Optional.
pub const TCX_SINCE: KernelVersion = KernelVersion::new(6, 6, 0);

/// What TCX changes, for messages: below it the legacy attach is used.
pub const WITHOUT_TCX: &str = "below Linux 6.6 (no TCX) the filter is attached as a legacy \
     clsact/netlink filter: it is not pinned as a link (it stays in the kernel until \
     `egress-loader detach` removes it) and is not ordered first among other tc programs";

/// `major.minor` of a release (KernelVersion's fields are private; its code is
/// LINUX_VERSION_CODE).
pub fn release(v: KernelVersion) -> String {
    let c = v.code();
    format!("{}.{}", c >> 16, (c >> 8) & 0xff)
}

/// Refuses a kernel below [`KERNEL_FLOOR`], naming each missing feature.
/// A pure function of the version, so every boundary can be tested; `run`
/// calls it with the running kernel's.
pub fn check_kernel(version: KernelVersion) -> Result<(), Error> {
    let missing: Vec<String> = KERNEL_FEATURES
        .iter()
        .filter(|f| version < f.since)
        .map(|f| {
            format!(
                "{} (Linux {}, for {})",
                f.name,
                release(f.since),
                f.used_for
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::KernelTooOld(KernelTooOld {
        running: version,
        floor: release(KERNEL_FLOOR),
        missing,
        below_tcx: WITHOUT_TCX,
    }))
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Refuses early, naming what is missing, instead of failing deep in a syscall.
pub fn check_privileges() -> Result<(), Error> {
    let Some(caps) = effective_caps() else {
        return Ok(()); // No /proc: let the syscalls speak.
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    // CAP_BPF arrived in 5.8; CAP_SYS_ADMIN covers it on every kernel.
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (load programs, create and pin maps)");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN (attach to interfaces)");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push(
            "CAP_PERFMON (the verifier's pointer-arithmetic checks for a networking program)",
        );
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Privileges { missing })
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == pins::BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Makes sure `pin_dir` can be created on a bpffs: mounts one at /sys/fs/bpf
/// when the pin dir lives there and nothing is mounted (as systemd would).
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), Error> {
    let parent = existing_ancestor(pin_dir);
    if is_bpffs(&parent) {
        return Ok(());
    }
    let root = Path::new(pins::BPFFS_ROOT);
    if pin_dir.starts_with(root) && !is_bpffs(root) {
        if !root.exists() {
            return Err(BpffsError::NoBpfRoot {
                root: root.to_path_buf(),
            }
            .into());
        }
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|errno| BpffsError::MountFailed {
            root: root.to_path_buf(),
            errno,
        })?;
        log::info!("mounted a bpf filesystem at {}", root.display());
        return Ok(());
    }
    Err(BpffsError::NotOnBpffs {
        pin_dir: pin_dir.to_path_buf(),
        default_pin_dir: pins::DEFAULT_PIN_DIR,
    }
    .into())
}

fn existing_ancestor(p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    while !cur.exists() {
        match cur.parent() {
            Some(parent) => cur = parent.to_path_buf(),
            None => break,
        }
    }
    cur
}

/// An exclusive lock on the pin dir for the life of `run`, so two loaders
/// never fight over one set of maps and links. The kernel drops it when the
/// process dies, however it dies.
pub struct PinDirLock {
    _dir: File,
}

impl PinDirLock {
    pub fn acquire(dir: &Path) -> Result<Self, Error> {
        let f = File::open(dir)?;
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::AlreadyRunning(dir.to_path_buf()));
            }
            return Err(err.into());
        }
        Ok(Self { _dir: f })
    }

    /// Whether some process holds the lock now (for `status`).
    pub fn is_held(dir: &Path) -> bool {
        matches!(Self::acquire(dir), Err(Error::AlreadyRunning(_)))
    }
}

/// The pid holding the `run` lock on `dir`, from /proc/locks (same pid namespace only).
pub fn lock_holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = (major as u64, minor as u64, meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 4242 00:2f:1234 0 EOF": pid, then MAJ:MIN:INODE (hex, hex, decimal).
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: u32 = f.get(4)?.parse().ok()?;
        let mut id = f.get(5)?.split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let ino: u64 = id.next()?.parse().ok()?;
        ((maj, min, ino) == want).then_some(pid)
    })
}

/// Hands the heap pages that are free again back to the kernel. Loading the
/// classifier object and building a policy (10,000 CIDRs: the TOML tree, the
/// prefix merge, the map diff) peak at several times the loader's idle
/// size, all short-lived; glibc keeps freed pages resident in its arenas
/// unless asked, so without this the idle loader would carry its startup
/// peak forever. Other allocators (musl) return memory on their own.
pub fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(major: u8, minor: u8, patch: u16) -> Option<String> {
        match check_kernel(KernelVersion::new(major, minor, patch)) {
            Ok(()) => None,
            Err(e) => {
                assert_eq!(e.exit_code(), 4, "{e}");
                Some(e.to_string())
            }
        }
    }

    #[test]
    fn the_floor_is_5_12() {
        assert_eq!(KERNEL_FLOOR, KernelVersion::new(5, 12, 0));
        for ok in [
            (5, 12, 0),
            (5, 12, 19),
            (5, 15, 0),
            (6, 1, 0),
            (6, 6, 0),
            (6, 18, 3),
        ] {
            assert_eq!(refused(ok.0, ok.1, ok.2), None, "{ok:?}");
        }
    }

    #[test]
    fn each_boundary_names_what_is_missing() {
        // Just below 5.12: only the compare-and-exchange is missing.
        let e = refused(5, 11, 255).unwrap();
        assert!(
            e.contains("BPF_CMPXCHG") && e.contains("(Linux 5.12, "),
            "{e}"
        );
        assert!(!e.contains("coarse") && !e.contains("ring buffer"), "{e}");
        // 5.11.0 has the coarse clock.
        let e = refused(5, 11, 0).unwrap();
        assert!(!e.contains("coarse"), "{e}");
        // Below 5.11: the coarse clock too, not yet the ring buffer.
        let e = refused(5, 10, 0).unwrap();
        assert!(
            e.contains("BPF_CMPXCHG") && e.contains("bpf_ktime_get_coarse_ns"),
            "{e}"
        );
        assert!(!e.contains("ring buffer"), "{e}");
        let e = refused(5, 8, 0).unwrap();
        assert!(!e.contains("ring buffer"), "{e}");
        // Below 5.8: all three.
        let e = refused(5, 7, 19).unwrap();
        for f in ["BPF_CMPXCHG", "bpf_ktime_get_coarse_ns", "ring buffer"] {
            assert!(e.contains(f), "{f}: {e}");
        }
        let e = refused(4, 19, 0).unwrap();
        assert!(
            e.contains("Linux 4.19.0 is below") && e.contains("TCX"),
            "{e}"
        );
    }
}
