use egress_loader::{
    Error,
    kernel::{attach::detach_all, system},
};

use super::{Result, args::PinDirArg};

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
    let pins = a.pin_dir.pins();
    if !pins.root().exists() {
        return Err(Error::NothingToDetach(pins.root().to_path_buf()));
    }
    println!("{}", detach_all(&pins)?);
    Ok(())
}
