use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
};

use egress_loader::{Error, events::DEFAULT_SOCKET};

use super::Result;

/// Follow drop events live from the running loader, as JSON lines.
///
/// Each line: time, verdict, action, rule, protocol, src/sport, dst/dport,
/// interface and, when a Docker engine is reachable, the container.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  egress-loader events\n  egress-loader events | jq -r 'select(.verdict==\"metadata_blocked\") | .container.name // .src'"
)]
pub struct Args {
    /// The running loader's events socket (its --events-socket).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

pub fn main(a: Args) -> Result {
    let stream = UnixStream::connect(&a.socket).map_err(|e| {
        Error::Invalid(format!(
            "cannot connect to {} ({e}): is `egress-loader run` running with this --events-socket?",
            a.socket.display()
        ))
    })?;
    eprintln!(
        "following drop events from {} (Ctrl-C to stop)",
        a.socket.display()
    );
    let stdout = std::io::stdout();
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Err(Error::Invalid(
        "the loader closed the events socket (it exited)".into(),
    ))
}
