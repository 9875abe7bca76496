//! Cgroups a test creates for the cgroup hooks, in the cgroup2 hierarchy
//! (docs/design.md, Tests: the hooks are attached only to cgroups the test
//! made, or to its Docker engine's own cgroup parent). Removed on drop, after
//! any process left in them is killed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use egress_loader::kernel::cgroup::CgroupFs;

use crate::netns::NetNs;

/// The path of the probe binary (tests/src/bin/egress-netprobe.rs), for
/// [`TestCgroup::probe`]; set by cargo for the package's integration tests.
pub fn netprobe_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("EGRESS_NETPROBE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("test executable without a directory")?;
    let profile = if dir.file_name() == Some(std::ffi::OsStr::new("deps")) {
        dir.parent().context("deps without a parent")?
    } else {
        dir
    };
    let p = profile.join("egress-netprobe");
    anyhow::ensure!(
        p.is_file(),
        "{} not built (cargo builds the package's binaries for its tests)",
        p.display()
    );
    Ok(p)
}

/// A cgroup tree `egress-test-<unique>` at the top of the cgroup2 mount.
#[derive(Debug)]
pub struct TestCgroup {
    fs: CgroupFs,
    rel: String,
}

impl TestCgroup {
    /// `None` (with the reason) when this host has no cgroup2 mount.
    pub fn new(tag: &str) -> Result<Self> {
        let fs = CgroupFs::find().context("no cgroup2 file system is mounted here")?;
        let rel = format!("egress-test-{tag}-{}", crate::unique_suffix());
        std::fs::create_dir(fs.path(&rel))
            .with_context(|| format!("creating cgroup {}", fs.path(&rel).display()))?;
        Ok(Self { fs, rel })
    }

    /// Below the mount, without a leading `/`.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The `--cgroup` argument for this tree, or a path below it.
    pub fn arg(&self, below: &str) -> String {
        if below.is_empty() {
            format!("/{}", self.rel)
        } else {
            format!("/{}/{below}", self.rel)
        }
    }

    pub fn fs(&self) -> &CgroupFs {
        &self.fs
    }

    /// The directory of `below` (relative to this tree).
    pub fn dir(&self, below: &str) -> PathBuf {
        if below.is_empty() {
            self.fs.path(&self.rel)
        } else {
            self.fs.path(&self.rel).join(below)
        }
    }

    /// Creates `below` (and its parents) in this tree.
    pub fn mkdir(&self, below: &str) -> Result<PathBuf> {
        let d = self.dir(below);
        std::fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
        Ok(d)
    }

    /// Runs `egress-netprobe --cgroup DIR ARGS...` in `ns`: a process of
    /// cgroup `below`; returns its JSON line.
    pub fn probe(&self, ns: &NetNs, below: &str, args: &[&str]) -> Result<serde_json::Value> {
        let out = ns
            .command(netprobe_bin()?)
            .arg("--cgroup")
            .arg(self.dir(below))
            .args(args)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).with_context(|| {
            format!(
                "egress-netprobe {args:?}: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

fn pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pids(&e.path(), out);
        }
    }
}

fn rmdir_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&e.path());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: rmdir {}: {e}", dir.display());
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let root = self.fs.path(&self.rel);
        for _ in 0..3 {
            let mut left = Vec::new();
            pids(&root, &mut left);
            if left.is_empty() {
                break;
            }
            for p in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        rmdir_tree(&root);
    }
}
