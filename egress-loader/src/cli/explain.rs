use std::net::{IpAddr, SocketAddr};

use egress_loader::{
    observe::explain::{Query, client, explain, render},
    policy::values::Protocol,
};

use super::{Result, args::PinDirArg};

/// What the filter in force would do with a connection, without sending
/// anything: the verdict, the rule, the action (drop/reject), any port
/// exception, the SMTP bucket's state and the hook that judges it. Runs the
/// kernel's decision code on the policy read back from the pins.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    egress-loader explain --to 169.254.169.254:80/tcp\n  \
    egress-loader explain --to 169.254.169.254:53/udp          # GCP's resolver: excepted\n  \
    egress-loader explain --from 172.17.0.2 --to 198.51.100.25:25 --json\n  \
    egress-loader explain --from web-1 --to [fd00:ec2::254]:80  # a container, by name")]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
    /// The client: an address, or a container's name or id (its addresses
    /// asked of the Docker engine) [default: any container].
    #[arg(long, value_name = "ADDRESS|CONTAINER")]
    from: Option<String>,
    /// Where it connects: ADDRESS:PORT[/tcp|udp] (IPv6 in brackets; tcp if
    /// no protocol is given).
    #[arg(long, value_name = "ADDRESS:PORT[/PROTO]", value_parser = parse_target)]
    to: Target,
    /// Docker engine for --from CONTAINER: unix:///PATH [default: $DOCKER_HOST,
    /// else unix:///var/run/docker.sock].
    #[arg(long, value_name = "URL")]
    docker_host: Option<String>,
    /// Machine-readable: {"from":..,"to":..,"port":N,"protocol":..,"verdict":..,
    /// "action":..,"rule_id":N,"rule":..,"exception":..,"reply":..,"hook":..,
    /// "smtp_bucket":{..},"dry_run":..}
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug)]
struct Target {
    addr: IpAddr,
    port: u16,
    protocol: Protocol,
}

fn parse_target(s: &str) -> std::result::Result<Target, String> {
    let (sa, proto) = match s.rsplit_once('/') {
        Some((sa, p)) => (sa, p.parse::<Protocol>().map_err(|e| e.to_string())?),
        None => (s, Protocol::Tcp),
    };
    let sa: SocketAddr = sa.parse().map_err(|_| {
        format!("{sa:?} is not ADDRESS:PORT (e.g. 169.254.169.254:80, [fd00:ec2::254]:80)")
    })?;
    if sa.port() == 0 {
        return Err("port 0: give the port the client connects to".into());
    }
    Ok(Target {
        addr: sa.ip(),
        port: sa.port(),
        protocol: proto,
    })
}

pub fn main(a: Args) -> Result {
    let pins = a.pin_dir.pins();
    let (from, client) = client(
        &pins,
        a.from.as_deref(),
        a.to.addr,
        a.docker_host.as_deref(),
    )?;
    let q = Query {
        from,
        to: a.to.addr,
        port: a.to.port,
        protocol: a.to.protocol,
    };
    let e = explain(&pins, &q, &client)?;
    if a.json {
        println!("{}", serde_json::to_string(&e).expect("serializable"));
    } else {
        print!("{}", render(&e));
    }
    Ok(())
}
