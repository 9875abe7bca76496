//! The end-to-end test's images, both `FROM scratch` so that no registry is
//! ever contacted: busybox (static) for the probing containers, and the
//! filter's image from the repository's `deploy/Dockerfile`, in the build
//! context that `cargo xtask image` stages too (egress-devtools' `image`:
//! that file and a statically linked `egress-loader`, nothing else).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use egress_devtools::build::build_static_loader;
use egress_devtools::image::{fresh_dir, is_static_elf, stage_context};
use egress_devtools::machine::find_program;

pub use super::engine::BUSYBOX_IMAGE;
use super::engine::DockerHost;

/// Busybox applets linked into the test image's /bin.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "wget", "nc", "ping", "sleep", "timeout", "echo", "cat", "true", "false", "seq", "date",
    "kill", "grep", "wc",
];

/// The filter container's name in the tests' engines.
pub const FILTER_CONTAINER: &str = "egress-filter";

/// `docker run` for the filter container [`FILTER_CONTAINER`], as
/// docs/deployment.md and deploy/compose.yaml run it, up to the image (the
/// caller adds the image and the loader's arguments): detached, restarted
/// always, in the engine's network namespace, with a read-only root and a
/// tmpfs for the events socket, the private bpffs `bpffs` in place of the
/// machine's /sys/fs/bpf, and [`filter_capabilities`].
pub fn filter_run_args(dh: &DockerHost, bpffs: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        FILTER_CONTAINER,
        "--restart",
        "always",
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/run/egress-filter",
        "-v",
    ]
    .map(String::from)
    .into();
    args.push(format!("{}:/sys/fs/bpf", bpffs.display()));
    args.extend(filter_capabilities(dh).iter().map(|c| c.to_string()));
    args
}

/// The capabilities the filter container gets: exactly what the loader
/// needs (docs/deployment.md, "Capabilities"). Engines before 23.0 do not know
/// CAP_BPF and CAP_PERFMON; CAP_SYS_ADMIN covers both there.
pub fn filter_capabilities(dh: &DockerHost) -> &'static [&'static str] {
    if dh.server_major() >= 23 {
        &[
            "--cap-add",
            "BPF",
            "--cap-add",
            "PERFMON",
            "--cap-add",
            "NET_ADMIN",
        ]
    } else {
        &["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN"]
    }
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
    build_static_loader(true)
}

/// Builds [`BUSYBOX_IMAGE`]: /bin/busybox (static) and symlinks for
/// [`BUSYBOX_APPLETS`], nothing else.
pub fn build_busybox_image(dh: &DockerHost) -> Result<()> {
    let busybox = find_program("busybox").context("busybox not found")?;
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
    docker_build(dh, &ctx, BUSYBOX_IMAGE)
}

/// Builds the filter image `tag` from `deploy/Dockerfile` and the static
/// `loader`, in a context holding only those two files.
pub fn build_filter_image(dh: &DockerHost, loader: &Path, tag: &str) -> Result<()> {
    let ctx = dh.dir().join("ctx-filter");
    stage_context(&ctx, loader)?;
    docker_build(dh, &ctx, tag)
}

/// `docker build --quiet --tag TAG CONTEXT` in the test's engine.
fn docker_build(dh: &DockerHost, context: &Path, tag: &str) -> Result<()> {
    dh.docker(&[
        "build".as_ref(),
        "--quiet".as_ref(),
        "--tag".as_ref(),
        tag.as_ref(),
        context.as_os_str(),
    ])?;
    Ok(())
}
