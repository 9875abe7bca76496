//! `cargo xtask image`: the filter's container image, `FROM scratch` with
//! the statically linked loader alone, built into the engine that
//! `DOCKER_HOST` names.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Result;
use clap::Args;
use egress_devtools::image;

use crate::{setup, util};

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
    let bin = util::build_static_loader(true)?;
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
        image::CONTEXT_BINARY,
        size as f64 / (1024.0 * 1024.0),
        opts.tag
    );
    Ok(())
}

/// `target/egress-image/` with the Dockerfile and `loader`, nothing else.
fn stage_context(loader: &Path) -> Result<PathBuf> {
    let context = util::target_dir().join(CONTEXT_DIR);
    image::stage_context(&context, loader)?;
    println!(
        "   staged {} and {} in {}",
        image::DOCKERFILE,
        loader.display(),
        context.display()
    );
    Ok(context)
}
