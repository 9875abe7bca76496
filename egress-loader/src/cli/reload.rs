use std::time::{Duration, Instant};

use egress_loader::{
    Error,
    error::{NoLoader, ReloadError},
    kernel::maps::PolicyMaps,
    observe::loader::RunningLoader,
    policy::apply,
};

use super::{Result, args::PinDirArg, run};

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
    let pins = a.pin_dir.pins();
    let loader = RunningLoader::on(&pins)?.ok_or_else(|| {
        Error::NoLoader(NoLoader::LockHolder {
            pin_dir: pins.root().to_path_buf(),
        })
    })?;
    let pid = loader.pid;
    let Some(run_args) = run::Args::from_command_line(&loader.args) else {
        return Err(ReloadError::NotALoader {
            pid,
            args: loader.args,
        }
        .into());
    };
    let Some(policy) = run::policy_for_reload(&run_args, &loader.cwd)? else {
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
