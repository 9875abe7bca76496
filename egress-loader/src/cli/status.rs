use egress_loader::{pins::PinDir, status};

use super::{PinDirArg, Result};

/// Show what is enforced: interfaces attached, program ids, the policy in the maps.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  egress-loader status\n  egress-loader status --json")]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn main(a: Args) -> Result {
    let s = status::read(&PinDir::new(a.pin_dir.pin_dir))?;
    if a.json {
        println!("{}", serde_json::to_string(&s).expect("serializable"));
    } else {
        print!("{}", status::render(&s));
    }
    Ok(())
}
