//! The argument groups several subcommands share, flattened into each
//! (`#[command(flatten)]`): the pin dir, and the Docker engine.

use std::path::PathBuf;

use clap::Arg;

use egress_loader::{
    endpoint::engine::DockerEndpoint,
    kernel::pins::{DEFAULT_PIN_DIR, PinDir},
};

use super::Result;

/// `--pin-dir`, shared by every subcommand that reads or changes the filter.
#[derive(clap::Args, Clone)]
pub struct PinDirArg {
    /// Directory on a bpf filesystem holding the filter's maps and links.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR, env = "EGRESS_PIN_DIR")]
    pin_dir: PathBuf,
}

impl PinDirArg {
    pub fn pins(&self) -> PinDir {
        PinDir::new(self.pin_dir.clone())
    }
}

/// `--docker-host` and `--no-docker`: the engine `run`, `status` and
/// `verify` ask. What each asks the engine for differs, so each gives the
/// two flags their help in its own words:
/// `#[command(mut_args(EngineArgs::help(DOCKER_HOST, NO_DOCKER)))]`.
#[derive(clap::Args, Clone)]
pub struct EngineArgs {
    #[arg(long, value_name = "URL")]
    docker_host: Option<String>,
    #[arg(long, conflicts_with = "docker_host")]
    no_docker: bool,
}

impl EngineArgs {
    /// Gives `--docker-host` and `--no-docker` these help texts (one
    /// paragraph, no final period, as clap makes of a doc comment). In
    /// place, unlike `mut_arg`: the flags keep their order in completions.
    pub fn help(docker_host: &'static str, no_docker: &'static str) -> impl FnMut(Arg) -> Arg {
        move |a| match a.get_id().as_str() {
            "docker_host" => a.help(docker_host),
            "no_docker" => a.help(no_docker),
            _ => a,
        }
    }

    /// The engine to ask; `None` with `--no-docker`, or when `DOCKER_HOST`
    /// is not a unix socket (a warning says so).
    pub fn endpoint(&self) -> Result<Option<DockerEndpoint>> {
        Ok(DockerEndpoint::from_flags(
            self.docker_host.as_deref(),
            self.no_docker,
        )?)
    }
}
