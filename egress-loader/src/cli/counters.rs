use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use egress_loader::{error::ConfigError, kernel::pins::PinDir, observe::counters};

use super::{Result, args::PinDirArg};

/// Print the filter's counters, read from the pinned maps (no daemon needed).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    egress-loader counters\n  \
    egress-loader counters --json | jq '.counters[] | select(.name==\"metadata_blocked\")'\n  \
    egress-loader counters --watch                 # redraw every second, with rates; Ctrl-C ends\n  \
    egress-loader counters --watch --interval 5 --count 12")]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
    /// Machine-readable: {"counters":[{"name":..,"packets":N,"bytes":N},...],"rules":[...],
    /// "dry_run":..,"events":{"lost":N,"suppressed":N},"interfaces":[{"interface":..,"ifindex":N,"present":..,"counters":[...]}]}
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Redraw the table every --interval with packets and bytes per second of
    /// each verdict, until Ctrl-C (or --count redraws).
    #[arg(long)]
    watch: bool,
    /// Seconds between redraws with --watch (0.1 to 3600).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 1.0,
        requires = "watch"
    )]
    interval: f64,
    /// Stop after this many redraws with --watch [default: until Ctrl-C].
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
}

pub fn main(a: Args) -> Result {
    let pins = a.pin_dir.pins();
    if a.watch {
        return watch(&pins, a.interval, a.count);
    }
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

/// Clears the terminal between frames; into a pipe, frames are separated by
/// a blank line instead of escape codes.
fn watch(pins: &PinDir, interval: f64, count: Option<u64>) -> Result {
    if !(0.1..=3600.0).contains(&interval) {
        return Err(ConfigError::new(
            "--interval",
            format!("{interval} is not between 0.1 and 3600 seconds"),
        )
        .into());
    }
    let interval = Duration::from_secs_f64(interval);
    let tty = std::io::stdout().is_terminal();
    let mut previous: Option<(counters::Snapshot, Instant)> = None;
    let mut next = Instant::now();
    let mut frames = 0u64;
    loop {
        let snapshot = counters::read(pins)?;
        let now = Instant::now();
        let rates = previous
            .as_ref()
            .map(|(before, at)| counters::Rates::between(before, &snapshot, now - *at));
        let mut frame = String::new();
        if tty {
            frame.push_str("\x1b[H\x1b[2J");
        } else if frames > 0 {
            frame.push('\n');
        }
        frame.push_str(&format!(
            "{} every {:?} (Ctrl-C to stop)\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            interval
        ));
        frame.push_str(&counters::render_watch(&snapshot, pins, rates.as_ref()));
        let mut out = std::io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()?;
        drop(out);
        frames += 1;
        if count.is_some_and(|c| frames >= c) {
            return Ok(());
        }
        previous = Some((snapshot, now));
        // A fixed schedule: a slow read does not make the frames drift.
        next += interval;
        let wait = next.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            next = Instant::now();
        }
        std::thread::sleep(wait);
    }
}
