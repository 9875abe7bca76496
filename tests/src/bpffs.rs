//! A private bpffs instance per test, so pinned maps and links of parallel
//! tests never meet. The mount lives in the (root) mount namespace, which
//! `nsenter --net` shares, so a loader running in a test's network namespace
//! sees it; it has nothing to do with the root *network* namespace.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};

/// A fresh `bpf` filesystem mounted on a new temporary directory.
/// Unmounted (which releases everything pinned in it, e.g. TCX links) and
/// removed on drop.
#[derive(Debug)]
pub struct BpffsMount {
    dir: PathBuf,
}

// No `Default`: creating one mounts a filesystem.
#[allow(clippy::new_without_default)]
impl BpffsMount {
    /// Creates `$TMPDIR/egress-bpffs-<unique>` and mounts bpffs on it.
    /// Panics (with the reason) if that fails; see [`try_new`](Self::try_new).
    pub fn new() -> Self {
        Self::try_new().unwrap_or_else(|e| panic!("cannot mount a private bpffs: {e:#}"))
    }

    /// [`new`](Self::new), returning an error instead of panicking.
    pub fn try_new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("egress-bpffs-{}", crate::unique_suffix()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Err(e) = nix::mount::mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e).with_context(|| format!("mount -t bpf bpf {}", dir.display()));
        }
        Ok(Self { dir })
    }

    /// Replaces the filesystem with a fresh, empty one at the same path,
    /// as a reboot does to /sys/fs/bpf: everything pinned is released.
    pub fn reset(&self) -> Result<()> {
        nix::mount::umount2(&self.dir, MntFlags::MNT_DETACH)
            .with_context(|| format!("umount {}", self.dir.display()))?;
        nix::mount::mount(
            Some("bpf"),
            &self.dir,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .with_context(|| format!("mount -t bpf bpf {}", self.dir.display()))
    }

    /// The mount point; use it (or a directory below it) as `--pin-dir`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates (if needed) and returns the subdirectory `name` of the mount.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    }

    /// Every path below the mount point (files and directories, relative,
    /// sorted), e.g. to check what a loader pinned. The kernel may add its
    /// own `maps.debug` and `progs.debug` entries to every bpffs.
    pub fn list(&self) -> Result<Vec<PathBuf>> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let p = entry?.path();
                out.push(p.strip_prefix(root)?.to_path_buf());
                if p.is_dir() {
                    walk(root, &p, out)?;
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.dir, &self.dir, &mut out)?;
        out.sort();
        Ok(out)
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.dir, MntFlags::MNT_DETACH) {
            eprintln!("warning: umount {}: {e}", self.dir.display());
            return; // never remove_dir_all through a still-mounted bpffs
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("warning: rmdir {}: {e}", self.dir.display());
        }
    }
}
