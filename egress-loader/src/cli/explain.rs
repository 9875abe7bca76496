use std::net::{IpAddr, SocketAddr};

use egress_loader::{
    Error,
    endpoint::{
        containers, coverage,
        engine::{DockerEndpoint, container_addresses},
        networks,
    },
    error::ConfigError,
    kernel::{attach, pins::PinDir},
    observe::{
        explain::{Client, Hook, HostNet, Query, address_hook, container_hook, explain, render},
        status,
    },
    policy::values::Protocol,
};

use super::{PinDirArg, Result};

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

/// The address of `family` among `addrs` (the destination's family).
fn of_family(addrs: &[(IpAddr, String)], want_v4: bool) -> Option<IpAddr> {
    addrs
        .iter()
        .map(|(ip, _)| *ip)
        .find(|ip| ip.is_ipv4() == want_v4)
}

/// The client and the hook that judges it: for an address, the host's
/// bridge whose subnet holds it (and the port it was seen on); for a
/// container, its coverage as `status` computes it.
fn client(a: &Args, pins: &PinDir) -> Result<(Option<IpAddr>, Client)> {
    let Some(from) = &a.from else {
        return Ok((
            None,
            Client {
                container: None,
                hook: Hook::any(),
            },
        ));
    };
    let want_v4 = a.to.addr.is_ipv4();
    // What is attached, as `status` reads it (links/<ifname> pins, legacy
    // filters): the same reading coverage uses.
    let interfaces = status::read(pins, None)?.interfaces;
    if let Ok(ip) = from.parse::<IpAddr>() {
        if ip.is_ipv4() != want_v4 {
            return Err(ConfigError::new(
                "--from",
                format!("{ip} and {} are not of one address family", a.to.addr),
            )
            .into());
        }
        let hook = address_hook(&HostNet::read(&interfaces), ip);
        return Ok((
            Some(ip),
            Client {
                container: None,
                hook,
            },
        ));
    }
    let env = std::env::var("DOCKER_HOST").ok();
    let endpoint = DockerEndpoint::resolve(a.docker_host.as_deref(), env.as_deref())?
        .ok_or_else(|| ConfigError::new("--from", "DOCKER_HOST is not a unix socket"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::from)?;
    let engine_error =
        |e: String| ConfigError::new("--from", format!("{e} (engine {})", endpoint.url()));
    let (nets, list) = rt
        .block_on(async {
            let docker = endpoint.connect().await?;
            let nets = networks::list(&docker).await?;
            let list = containers::list(&docker).await?;
            Ok::<_, String>((nets, list))
        })
        .map_err(engine_error)?;
    let Some(info) = list
        .iter()
        .find(|c| c.name == *from || c.name == from.trim_start_matches('/'))
        .or_else(|| {
            list.iter()
                .find(|c| from.len() >= 4 && c.id.starts_with(from.as_str()))
        })
    else {
        return Err(ConfigError::new(
            "--from",
            format!("no running container {from:?} (engine {})", endpoint.url()),
        )
        .into());
    };
    let attached = status::attached(&interfaces, pins);
    let cov = coverage::compute(&list, &nets, &attached, |c| {
        c.pid.map(coverage::host_peers).unwrap_or_default()
    });
    let mine = cov
        .containers
        .iter()
        .find(|c| c.id == info.id)
        .expect("compute covers every container it is given");
    let hook = container_hook(mine, Some(info), &attach::interfaces(), &attached.cgroups);
    let addrs = rt
        .block_on(container_addresses(&endpoint, &info.id))
        .map_err(|e| engine_error(e.to_string()))?;
    let addr = match of_family(&addrs, want_v4) {
        Some(ip) => Some(ip),
        // Host network, or no network: it has no address of its own.
        None if matches!(hook.kind, "cgroup" | "none" | "uncovered") => None,
        None => {
            return Err(ConfigError::new(
                "--from",
                format!(
                    "container {from:?} has no {} address",
                    if want_v4 { "IPv4" } else { "IPv6" }
                ),
            )
            .into());
        }
    };
    Ok((
        addr,
        Client {
            container: Some(info.name.clone()),
            hook,
        },
    ))
}

pub fn main(a: Args) -> Result {
    let pins = PinDir::new(a.pin_dir.pin_dir.clone());
    if !pins.is_loaded() {
        return Err(egress_loader::kernel::maps::not_loaded(&pins));
    }
    let (from, client) = client(&a, &pins)?;
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
