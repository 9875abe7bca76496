//! `cargo xtask image`: the filter's container image, `FROM scratch` with
//! the statically linked loader alone, built into the engine that
//! `DOCKER_HOST` names.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args;

use crate::{setup, util};

/// The Dockerfile, relative to the workspace root.
const DOCKERFILE: &str = "deploy/Dockerfile";
/// The binary's name in the build context (the Dockerfile COPYs it).
const CONTEXT_BINARY: &str = "egress-loader";
/// glibc, linked statically: the image has no libc to load.
const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static";
/// The build context, under the target directory.
const CONTEXT_DIR: &str = "egress-image";

/// Build the filter's container image: FROM scratch, the static loader alone.
///
/// Runs `setup`, builds egress-loader statically linked (release profile,
/// `--target <arch>-unknown-linux-gnu` with `-C target-feature=+crt-static`
/// for that target only, so build scripts, proc macros and the eBPF build
/// are unaffected), checks that the binary needs no dynamic loader, stages a
/// build context holding only deploy/Dockerfile and the binary
/// (target/egress-image/), and runs `docker build` in it. The image is built
/// by the engine the docker CLI talks to: DOCKER_HOST, or the current
/// context.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask image                                        # egress-filter:latest\n  \
    cargo xtask image --tag registry.example/egress-filter:0.1.0\n  \
    DOCKER_HOST=unix:///run/other.sock cargo xtask image     # another engine\n  \
    cargo xtask image --context-only                         # stage the context, no docker\n\n\
    Then, on the Docker host:\n  \
    docker run -d --name egress-filter --restart always --privileged --network host \\\n    \
    -v /sys/fs/bpf:/sys/fs/bpf egress-filter:latest\n  \
    docker exec egress-filter egress-loader counters")]
pub struct Options {
    /// Name and tag of the image.
    #[arg(long, default_value = "egress-filter:latest")]
    tag: String,
    /// Stop after staging the build context (its path is printed), e.g. to
    /// build it with another tool; docker is not needed.
    #[arg(long)]
    context_only: bool,
}

pub fn main(opts: &Options) -> Result<()> {
    setup::ensure(false)?;
    let bin = build_static_loader(true)?;
    let context = stage_context(&bin)?;
    if opts.context_only {
        println!("build context: {}", context.display());
        return Ok(());
    }
    let mut cmd = util::command("docker");
    cmd.args(["build", "--tag", &opts.tag]).arg(&context);
    util::run(&mut cmd)?;
    let size = fs::metadata(&bin)?.len();
    println!(
        "built {} (FROM scratch: {} alone, {:.1} MiB); run it with:\n  \
         docker run -d --name egress-filter --restart always --privileged --network host \
         -v /sys/fs/bpf:/sys/fs/bpf {}",
        opts.tag,
        CONTEXT_BINARY,
        size as f64 / (1024.0 * 1024.0),
        opts.tag
    );
    Ok(())
}

/// The host's glibc target, e.g. `x86_64-unknown-linux-gnu`.
pub fn host_gnu_target() -> String {
    format!("{}-unknown-linux-gnu", env::consts::ARCH)
}

/// Builds egress-loader statically linked for the host's glibc target and
/// returns the binary's path (`target/<triple>/{release,debug}/egress-loader`).
/// The flag is set for that target only (`CARGO_TARGET_<TRIPLE>_RUSTFLAGS`):
/// with a plain RUSTFLAGS it would reach proc macros, which cannot be static.
pub fn build_static_loader(release: bool) -> Result<PathBuf> {
    let target = host_gnu_target();
    let var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        target.to_uppercase().replace('-', "_")
    );
    let mut cmd = util::cargo();
    cmd.env(&var, STATIC_RUSTFLAGS)
        .args(["build", "--package", util::LOADER_PACKAGE, "--target"])
        .arg(&target);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    let bin = util::target_dir()?
        .join(&target)
        .join(profile)
        .join(util::LOADER_PACKAGE);
    ensure!(
        bin.is_file(),
        "{} does not exist after the build",
        bin.display()
    );
    if !is_static_elf(&bin)? {
        bail!(
            "{} is dynamically linked although it was built with {var}='{STATIC_RUSTFLAGS}'; \
             is RUSTFLAGS set in the environment (it takes precedence)?",
            bin.display()
        );
    }
    Ok(bin)
}

/// `target/egress-image/` with the Dockerfile and `bin`, nothing else.
fn stage_context(bin: &Path) -> Result<PathBuf> {
    let context = util::target_dir()?.join(CONTEXT_DIR);
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("removing {}", context.display()))?;
    }
    fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    let dockerfile = util::workspace_root()?.join(DOCKERFILE);
    fs::copy(&dockerfile, context.join("Dockerfile"))
        .with_context(|| format!("copying {}", dockerfile.display()))?;
    fs::copy(bin, context.join(CONTEXT_BINARY))
        .with_context(|| format!("copying {}", bin.display()))?;
    println!(
        "   staged {} and {} in {}",
        DOCKERFILE,
        bin.display(),
        context.display()
    );
    Ok(context)
}

/// Whether the ELF file at `path` needs no dynamic loader (no `PT_INTERP`
/// program header; static-pie binaries still have `PT_DYNAMIC`).
fn is_static_elf(path: &Path) -> Result<bool> {
    use object::read::elf::{ElfFile64, ProgramHeader as _};
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    // A dynamic executable names its loader in a PT_INTERP program header.
    Ok(!elf
        .elf_program_headers()
        .iter()
        .any(|h| h.p_type(elf.endian()) == object::elf::PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_dynamic() {
        let me = env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
    }

    #[test]
    fn dockerfile_copies_the_context_binary() {
        let text = fs::read_to_string(util::workspace_root().unwrap().join(DOCKERFILE)).unwrap();
        assert!(text.contains("FROM scratch"), "{text}");
        assert!(text.contains(&format!("COPY {CONTEXT_BINARY} ")), "{text}");
    }

    #[test]
    fn target_triple() {
        assert!(host_gnu_target().ends_with("-unknown-linux-gnu"));
    }
}
