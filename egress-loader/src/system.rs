//! What the host must provide: capabilities, a bpf filesystem, one loader per
//! pin dir.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use crate::{error::Error, pins};

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
        Err(Error::Privileges {
            missing: missing.join(", "),
        })
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
            return Err(Error::Bpffs(format!(
                "{} does not exist: is sysfs mounted? In a container, add -v /sys/fs/bpf:/sys/fs/bpf",
                root.display()
            )));
        }
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            Error::Bpffs(format!(
                "no bpf filesystem at {} and mounting one failed ({e}); mount it yourself: \
                     mount -t bpf bpf {}",
                root.display(),
                root.display()
            ))
        })?;
        log::info!("mounted a bpf filesystem at {}", root.display());
        return Ok(());
    }
    Err(Error::Bpffs(format!(
        "pin dir {} is not on a bpf filesystem: pick a directory under one \
         (default {}), or mount one: mount -t bpf bpf DIR",
        pin_dir.display(),
        pins::DEFAULT_PIN_DIR
    )))
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
