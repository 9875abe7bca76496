//! What this machine has: root, a CI environment, programs.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// Where system programs live that a non-root `PATH` often lacks (and where
/// dockerd looks for iptables, runc and the containerd shim).
pub const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// The Docker engine that the end-to-end tests start inside a network
/// namespace (tests/src/docker/engine.rs) and that `cargo xtask setup
/// --test-deps` installs, with the Debian package providing each program.
/// Checked by program, not by package, so an existing Docker CE install is
/// used as it is. busybox must be the static build: it is the whole
/// userland of the tests' FROM-scratch image.
pub const DOCKER_ENGINE_TOOLS: &[(&str, &str)] = &[
    ("dockerd", "docker.io"),
    ("containerd", "docker.io"),
    ("containerd-shim-runc-v2", "docker.io"),
    ("runc", "docker.io"),
    ("docker", "docker.io"),
    ("busybox", "busybox-static"),
];

/// Whether the effective user is root (read from `/proc/self/status`).
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let uids = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .context("no Uid: line in /proc/self/status")?;
    // Real, effective, saved, filesystem.
    let effective = uids
        .split_whitespace()
        .nth(1)
        .context("malformed Uid: line in /proc/self/status")?;
    Ok(effective == "0")
}

/// Whether we run under CI (`CI=true` in any case, or `CI=1`): there a
/// test that cannot run is a failure, not a skip.
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|ci| ci.eq_ignore_ascii_case("true") || ci == "1")
}

/// Looks for the executable `program` on `PATH` (a name with a `/` is taken
/// as a path).
pub fn on_path(program: &str) -> Option<PathBuf> {
    which::which(program).ok()
}

/// Looks for `program` on `PATH`, then in the sbin directories ([`SBIN_DIRS`]).
pub fn find_program(program: &str) -> Option<PathBuf> {
    on_path(program).or_else(|| {
        SBIN_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(program))
            .find(|path| path.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_by_path() {
        let sh = find_program("sh").expect("sh on PATH or in sbin");
        assert!(sh.is_absolute(), "{}", sh.display());
        assert_eq!(on_path(sh.to_str().unwrap()), Some(sh));
        assert_eq!(find_program("egress-devtools-no-such-program"), None);
        assert_eq!(on_path("/nonexistent/sh"), None);
    }
}
