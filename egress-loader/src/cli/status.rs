use std::path::PathBuf;

use egress_loader::{
    Error,
    kernel::pins::PinDir,
    observe::{
        config_record::{DEFAULT_STATE_FILE, state_file_arg},
        status,
    },
};

use super::{PinDirArg, Result};

/// Show what is enforced: interfaces attached, program ids, the policy in the maps.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  egress-loader status\n  egress-loader status --json\n  egress-loader status --check   # liveness probe"
)]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
    /// The running loader's state file, which says which config file and
    /// version is in force ("none": do not read it).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
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
    let s = status::read(&PinDir::new(a.pin_dir.pin_dir), state_file.as_deref())?;
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
            return Err(Error::CheckFailed(
                "no loader is running on this pin dir".into(),
            ));
        }
        if !stale.is_empty() {
            return Err(Error::CheckFailed(format!(
                "not attached: {}",
                stale.join(", ")
            )));
        }
    }
    Ok(())
}
