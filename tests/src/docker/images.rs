//! The end-to-end test's images, both `FROM scratch` so that no registry is
//! ever contacted: busybox (static) for the probing containers, and the
//! filter's image built from the repository's `deploy/Dockerfile` exactly as
//! `cargo xtask image` builds it (a context holding only that file and a
//! statically linked `egress-loader`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::engine::{DockerHost, find_tool};

/// Tag of the busybox test image (in the test's own engine).
pub const BUSYBOX_IMAGE: &str = "egress-e2e-busybox:latest";
/// Busybox applets linked into the test image's /bin.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "wget", "nc", "ping", "sleep", "timeout", "echo", "cat", "true", "false", "seq", "date",
    "kill", "grep", "wc",
];
/// The Dockerfile shipped in the repository.
pub const DOCKERFILE: &str = "deploy/Dockerfile";
/// The binary's name inside the build context (the Dockerfile COPYs it).
pub const CONTEXT_BINARY: &str = "egress-loader";
/// Environment variable for the crt-static flag, per target triple, so it
/// never reaches build scripts, proc macros or the nested eBPF build.
pub const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The host's glibc target triple, e.g. `x86_64-unknown-linux-gnu`.
pub fn host_gnu_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// Whether the ELF file at `path` is statically linked: it has no
/// `PT_INTERP` program header (static-pie binaries have `PT_DYNAMIC` but
/// need no loader). Fails if it is not a 64-bit little-endian ELF file.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    use object::read::elf::{ElfFile64, ProgramHeader as _};
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    // A dynamic executable names its loader in a PT_INTERP program header.
    Ok(!elf
        .elf_program_headers()
        .iter()
        .any(|h| h.p_type(elf.endian()) == object::elf::PT_INTERP))
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace_root().join(d),
        _ => workspace_root().join("target"),
    }
}

/// Builds the release loader statically linked, the way `cargo xtask image`
/// does, and returns its path. The first build takes minutes (a separate
/// target directory); later ones are incremental.
pub fn build_static_loader() -> Result<PathBuf> {
    let target = host_gnu_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        target.to_uppercase().replace('-', "_")
    );
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .env(&var, STATIC_RUSTFLAGS)
        .args([
            "build",
            "--release",
            "--package",
            "egress-loader",
            "--target",
        ])
        .arg(&target);
    eprintln!(
        "$ {var}='{STATIC_RUSTFLAGS}' cargo build --release --package egress-loader --target {target}"
    );
    let st = cmd.status().context("running cargo")?;
    ensure!(st.success(), "building the static loader failed: {st}");
    let bin = target_dir()
        .join(&target)
        .join("release")
        .join("egress-loader");
    ensure!(
        is_static_elf(&bin)?,
        "{} is dynamically linked although it was built with {STATIC_RUSTFLAGS} \
         (RUSTFLAGS in the environment override per-target flags)",
        bin.display()
    );
    Ok(bin)
}

/// The loader binary for the filter image: the one the other tests use
/// (`EGRESS_LOADER_BIN`, which `cargo xtask test` builds statically) when it
/// is statically linked, else a static release build (see
/// [`build_static_loader`]).
pub fn image_loader_bin() -> Result<PathBuf> {
    if let Ok(bin) = crate::loader_bin()
        && is_static_elf(&bin)?
    {
        return Ok(bin);
    }
    eprintln!(
        "the loader the other tests use is dynamically linked and a FROM-scratch image \
         needs a static one: building it"
    );
    build_static_loader()
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Builds [`BUSYBOX_IMAGE`]: /bin/busybox (static) and symlinks for
/// [`BUSYBOX_APPLETS`], nothing else.
pub fn build_busybox_image(dh: &DockerHost) -> Result<()> {
    let busybox = find_tool("busybox").context("busybox not found")?;
    ensure!(
        is_static_elf(&busybox)?,
        "{} is dynamically linked (install busybox-static)",
        busybox.display()
    );
    let ctx = dh.dir().join("ctx-busybox");
    fresh_dir(&ctx.join("bin"))?;
    std::fs::copy(&busybox, ctx.join("bin/busybox"))?;
    for applet in BUSYBOX_APPLETS {
        std::os::unix::fs::symlink("busybox", ctx.join("bin").join(applet))?;
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY bin/ /bin/\n")?;
    dh.docker(&[
        "build".as_ref(),
        "--quiet".as_ref(),
        "--tag".as_ref(),
        BUSYBOX_IMAGE.as_ref(),
        ctx.as_os_str(),
    ])?;
    Ok(())
}

/// Builds the filter image `tag` from `deploy/Dockerfile` and the static
/// `loader`, in a context holding only those two files.
pub fn build_filter_image(dh: &DockerHost, loader: &Path, tag: &str) -> Result<()> {
    if !is_static_elf(loader)? {
        bail!(
            "{} is dynamically linked; the image is FROM scratch",
            loader.display()
        );
    }
    let ctx = dh.dir().join("ctx-filter");
    fresh_dir(&ctx)?;
    std::fs::copy(workspace_root().join(DOCKERFILE), ctx.join("Dockerfile"))
        .with_context(|| format!("copying {DOCKERFILE}"))?;
    std::fs::copy(loader, ctx.join(CONTEXT_BINARY))
        .with_context(|| format!("copying {}", loader.display()))?;
    dh.docker(&[
        "build".as_ref(),
        "--quiet".as_ref(),
        "--tag".as_ref(),
        tag.as_ref(),
        ctx.as_os_str(),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_elf() {
        // The test binary itself is dynamically linked (glibc default).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let not_elf = std::env::temp_dir().join(format!("not-elf-{}", crate::unique_suffix()));
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(is_static_elf(&not_elf).is_err());
        std::fs::remove_file(&not_elf).unwrap();
    }

    #[test]
    fn dockerfile_is_from_scratch() {
        let text = std::fs::read_to_string(workspace_root().join(DOCKERFILE)).unwrap();
        let from: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
            .collect();
        assert_eq!(from, ["FROM scratch"], "{text}");
        assert!(text.contains(&format!("COPY {CONTEXT_BINARY} ")), "{text}");
    }
}
