use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Parser;
use egress_loader::{
    Error,
    error::{NoLoader, ReloadError},
    kernel::{maps::PolicyMaps, pins::PinDir, system},
    policy::apply,
};

use super::{Cli, Command, PinDirArg, Result};

/// Make the running loader re-read its --config file, without detaching.
///
/// The file is validated first, with the running loader's own flags
/// applied: an invalid file is refused (exit 2, the field named) and the
/// loader is not disturbed. Then the loader gets SIGHUP, and `reload` waits
/// until the maps hold the new policy.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  vi /etc/egress-filter.toml && egress-loader reload")]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
}

pub fn main(a: Args) -> Result {
    let pins = PinDir::new(a.pin_dir.pin_dir);
    let pid = system::lock_holder(pins.root()).ok_or_else(|| {
        Error::NoLoader(NoLoader::LockHolder {
            pin_dir: pins.root().to_path_buf(),
        })
    })?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| PathBuf::from("/"));
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let Ok(Cli {
        command: Command::Run(run_args),
    }) = Cli::try_parse_from(&args)
    else {
        return Err(ReloadError::NotALoader { pid, args }.into());
    };
    let Some(policy) = super::run::policy_for_reload(&run_args, &cwd)? else {
        return Err(ReloadError::NoConfig { pid }.into());
    };
    let maps = PolicyMaps::open(&pins)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|errno| ReloadError::Signal { pid, errno })?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if apply::in_force(&maps, &policy)? {
            println!(
                "reloaded: the loader (pid {pid}) applied its configuration in {:?}",
                start.elapsed()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(ReloadError::NotApplied { pid }.into())
}
