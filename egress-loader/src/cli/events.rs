use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
};

use egress_loader::{Error, error::NoLoader, observe::events::DEFAULT_SOCKET};

use super::Result;

/// Follow drop events live from the running loader, as JSON lines.
///
/// Each line: time, verdict, action, rule, protocol, src/sport, dst/dport,
/// interface and, when a Docker engine is reachable, the container.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  egress-loader events\n  egress-loader events --count 1    # wait for the next drop, print it, exit\n  egress-loader events | jq -r 'select(.verdict==\"metadata_blocked\") | .container.name // .src'"
)]
pub struct Args {
    /// The running loader's events socket (its --events-socket).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Exit after this many events (e.g. `--count 1` in a script that waits
    /// for the next drop); by default follow until interrupted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

pub fn main(a: Args) -> Result {
    let stream = UnixStream::connect(&a.socket).map_err(|cause| {
        let kind = cause.kind();
        let unreachable = NoLoader::EventsSocket {
            socket: a.socket.clone(),
            cause,
        };
        match kind {
            // No socket, or nobody listening on it: no loader to follow.
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => Error::NoLoader(unreachable),
            _ => Error::Io(std::io::Error::new(kind, unreachable.to_string())),
        }
    })?;
    eprintln!(
        "following drop events from {} (Ctrl-C to stop)",
        a.socket.display()
    );
    let stdout = std::io::stdout();
    let mut seen = 0u64;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        // Notes such as `{"lagged":..}` are lines too, but not events.
        if !line.starts_with("{\"lagged\"") {
            seen += 1;
            if a.count.is_some_and(|n| seen >= n) {
                return Ok(());
            }
        }
    }
    Err(Error::EventsClosed)
}
