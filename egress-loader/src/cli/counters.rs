use egress_loader::{counters, pins::PinDir};

use super::{PinDirArg, Result};

/// Print the filter's counters, read from the pinned maps (no daemon needed).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  egress-loader counters\n  egress-loader counters --json | jq '.counters[] | select(.name==\"metadata_blocked\")'"
)]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
    /// Machine-readable: {"counters":[{"name":..,"packets":N,"bytes":N},...],"rules":[...],"dry_run":..}
    #[arg(long)]
    json: bool,
}

pub fn main(a: Args) -> Result {
    let pins = PinDir::new(a.pin_dir.pin_dir);
    let snapshot = counters::read(&pins)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&snapshot).expect("serializable")
        );
    } else {
        print!("{}", counters::render_table(&snapshot, &pins));
    }
    Ok(())
}
