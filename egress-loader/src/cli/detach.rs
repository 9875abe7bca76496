use egress_loader::{
    Error,
    kernel::{attach::detach_all, pins::PinDir, system},
};

use super::{PinDirArg, Result};

/// Remove the filter: every link and legacy tc filter, every pinned map
/// (the counters go with them). A running `run` notices and exits.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  egress-loader detach --pin-dir /sys/fs/bpf/egress")]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
}

pub fn main(a: Args) -> Result {
    system::check_privileges()?;
    let pins = PinDir::new(a.pin_dir.pin_dir);
    if !pins.root().exists() {
        return Err(Error::NothingToDetach(pins.root().to_path_buf()));
    }
    println!("{}", detach_all(&pins)?);
    Ok(())
}
