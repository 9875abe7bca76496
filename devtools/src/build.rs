//! Building egress-loader: the host build, and the statically linked one
//! that a FROM-scratch image needs. Its build script builds the eBPF crate
//! and embeds the object, so either build needs the toolchain that
//! `cargo xtask setup` installs.

use std::{env, path::PathBuf};

use anyhow::{Result, bail};

use crate::{
    image::is_static_elf,
    process,
    workspace::{LOADER_PACKAGE, built_binary},
};

/// glibc, linked statically: the image has no libc to load.
pub const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// The host's glibc target, e.g. `x86_64-unknown-linux-gnu`.
pub fn host_gnu_target() -> String {
    format!("{}-unknown-linux-gnu", env::consts::ARCH)
}

/// Builds egress-loader for the host and returns the binary's path
/// (`target/{debug,release}/egress-loader`).
pub fn build_loader(release: bool) -> Result<PathBuf> {
    let mut cmd = process::cargo();
    cmd.args(["build", "--package", LOADER_PACKAGE]);
    if release {
        cmd.arg("--release");
    }
    process::run(&mut cmd)?;
    built_binary(None, release, LOADER_PACKAGE)
}

/// Builds egress-loader statically linked for the host's glibc target and
/// returns the binary's path (`target/<triple>/{release,debug}/egress-loader`).
/// The flag is set for that target only (`CARGO_TARGET_<TRIPLE>_RUSTFLAGS`):
/// with a plain RUSTFLAGS it would reach build scripts, proc macros (which
/// cannot be static) and the nested eBPF build. The first build takes
/// minutes (a target directory of its own); later ones are incremental.
pub fn build_static_loader(release: bool) -> Result<PathBuf> {
    let target = host_gnu_target();
    let var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        target.to_uppercase().replace('-', "_")
    );
    let mut cmd = process::cargo();
    cmd.env(&var, STATIC_RUSTFLAGS)
        .args(["build", "--package", LOADER_PACKAGE, "--target"])
        .arg(&target);
    if release {
        cmd.arg("--release");
    }
    process::run(&mut cmd)?;
    let bin = built_binary(Some(&target), release, LOADER_PACKAGE)?;
    if !is_static_elf(&bin)? {
        bail!(
            "{} is dynamically linked although it was built with {var}='{STATIC_RUSTFLAGS}'; \
             is RUSTFLAGS set in the environment (it takes precedence)?",
            bin.display()
        );
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_triple() {
        assert!(host_gnu_target().ends_with("-unknown-linux-gnu"));
        assert!(host_gnu_target().starts_with(env::consts::ARCH));
    }
}
