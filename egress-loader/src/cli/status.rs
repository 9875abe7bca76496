use std::path::PathBuf;

use egress_loader::{
    Error,
    error::CheckFailure,
    observe::{
        config_record::{DEFAULT_STATE_FILE, state_file_arg},
        status,
    },
};

use super::{
    Result,
    args::{EngineArgs, PinDirArg},
};

/// Show what is enforced: interfaces and cgroups attached, program ids, every
/// running container and the hook that filters it (or UNCOVERED and why),
/// the policy in the maps.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  egress-loader status\n  egress-loader status --json\n  egress-loader status --check   # liveness probe",
    mut_args(EngineArgs::help(
        "Docker engine whose running containers are listed with the hook that filters each: \
         unix:///PATH [default: $DOCKER_HOST if it is a unix:// URL, else \
         unix:///var/run/docker.sock]",
        "Do not ask a Docker engine: interfaces and cgroups only",
    ))
)]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
    /// The running loader's state file, which says which config file and
    /// version is in force ("none": do not read it).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Exit 1 unless a loader is running on this pin dir and every link it
    /// pinned is attached (for liveness probes; 3 if no filter is loaded
    /// there). A host with no matching interface yet is healthy.
    #[arg(long)]
    check: bool,
}

pub fn main(a: Args) -> Result {
    let state_file = state_file_arg(&a.state_file);
    let engine = a.engine.endpoint()?;
    let s = status::read_with_engine(&a.pin_dir.pins(), state_file.as_deref(), engine.as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string(&s).expect("serializable"));
    } else {
        print!("{}", status::render(&s));
    }
    if a.check {
        let stale: Vec<&str> = s
            .interfaces
            .iter()
            .filter(|i| !i.attached)
            .map(|i| i.name.as_str())
            .collect();
        if !s.loader_running {
            return Err(Error::CheckFailed(CheckFailure::NoLoaderRunning));
        }
        if !stale.is_empty() {
            return Err(Error::CheckFailed(CheckFailure::NotAttached(
                stale.into_iter().map(String::from).collect(),
            )));
        }
    }
    Ok(())
}
