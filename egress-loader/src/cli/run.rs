use std::{net::SocketAddr, path::PathBuf, time::Duration};

use egress_loader::{
    daemon::{RunOptions, run},
    error::ConfigError,
    kernel::{attach::AttachMode, runtime::current_thread},
    observe::{
        config_record::{DEFAULT_STATE_FILE, state_file_arg},
        events::DEFAULT_SOCKET,
    },
    policy::{
        ConfigFile, Overrides, Policy,
        flags::{PortList, parse_block_flag, parse_port_list},
        schema::BlockEntry,
    },
};

use super::{
    Result,
    args::{EngineArgs, PinDirArg},
};

/// Load the filter, attach it to the bridges and keep following them.
///
/// Flags override the config file; with neither, the defaults apply
/// (`egress-loader check-config --defaults` prints them). Invalid input is
/// refused with exit status 2 before anything in the kernel changes.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  \
    egress-loader run\n  \
    egress-loader run --config /etc/egress-filter/config.toml --iface cni0\n  \
    egress-loader run --config /etc/egress-filter/config.toml --no-watch-config   # SIGHUP only\n  \
    egress-loader run --block 10.0.0.5/32:tcp/8080 --smtp-rate 2/minute --smtp-burst 2\n  \
    egress-loader run --dry-run --detach-on-exit\n  \
    egress-loader run --metrics-addr 127.0.0.1:9184 --docker-host unix:///run/docker.sock",
    mut_args(EngineArgs::help(
        "Docker engine that names the container behind each drop event's source address: \
         unix:///PATH [default: $DOCKER_HOST if it is a unix:// URL, else \
         unix:///var/run/docker.sock]. Without a reachable engine, events carry addresses \
         only (said once in the log)",
        "Do not ask a Docker engine: events carry addresses only",
    ))
)]
pub struct Args {
    /// TOML configuration file (docs/configuration.md). Followed: a change
    /// on disk (an edit, a file renamed over it, a ConfigMap's symlink swap)
    /// is validated and applied within a second, as on SIGHUP; an invalid
    /// version is refused and logged, and the policy in force stays.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not follow the --config file: re-read it on SIGHUP (`egress-loader
    /// reload`) only.
    #[arg(long, requires = "config")]
    no_watch_config: bool,
    /// Where the loader records which configuration is in force (file,
    /// SHA-256, generation, last refusal) for `egress-loader status`;
    /// "none" to keep no record.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
    /// Interface name or pattern (`*`, `?`) to filter; repeatable; replaces the
    /// configured list [default: docker0, br-*].
    #[arg(long = "iface", value_name = "PATTERN")]
    ifaces: Vec<String>,
    /// Do not add the Docker engine's bridge networks to the interfaces
    /// (by default each one is filtered whatever its interface name,
    /// attached within a second of `docker network create`).
    #[arg(long)]
    no_docker_networks: bool,
    /// Cgroup under which containers run, for the cgroup hooks that judge
    /// host-network containers: a path below the cgroup2 mount (/docker,
    /// /egress.slice), a pattern in its last component
    /// (/system.slice/docker-*.scope), "auto" (ask the engine and the host),
    /// "kubepods" (Kubernetes' /kubepods.slice or /kubepods, whichever
    /// exists; refuses to start when neither does), or "none" (no cgroup
    /// hooks); repeatable; replaces the configured list [default: auto].
    #[arg(long = "cgroup", value_name = "PATH")]
    cgroups: Vec<String>,
    #[command(flatten)]
    pin_dir: PinDirArg,
    /// Also block CIDR[:tcp|udp[/PORT,...]], added to the configured list;
    /// repeatable. E.g. 10.0.0.0/8, fd00::/8, 168.63.129.16/32:tcp/80,32526.
    #[arg(long, value_name = "CIDR[:PROTO[/PORTS]]", value_parser = parse_block_flag)]
    block: Vec<BlockEntry>,
    /// Rate-limited TCP destination ports, comma-separated [default: 25,465,587,2525].
    #[arg(long, value_name = "PORTS", value_parser = parse_port_list)]
    smtp_ports: Option<PortList>,
    /// New connections allowed to those ports, as iptables writes it:
    /// N/second|minute|hour|day [default: 5/minute].
    #[arg(long, value_name = "RATE")]
    smtp_rate: Option<String>,
    /// Connection attempts allowed at once before the rate applies [default: 5].
    #[arg(long, value_name = "N")]
    smtp_burst: Option<i64>,
    /// `global`: one bucket for the host (iptables -m limit); `per-source`:
    /// one per container address; `per-container`: one per container's veth,
    /// which it cannot forge [default: global].
    #[arg(long, value_name = "SCOPE")]
    scope: Option<String>,
    /// Count every match as it would be, drop nothing (audit mode).
    #[arg(long)]
    dry_run: bool,
    /// Filter at the bridges only: no program on each container's veth
    /// (then the sender is known only by its source address, and
    /// exceptions and `per-container` buckets cannot apply).
    #[arg(long)]
    no_endpoints: bool,
    /// Leave the host's decapsulating devices unfiltered. By default the
    /// inner packets that every vxlan, geneve, gre/gretap, ipip, sit,
    /// ip6tnl and tun device of the host namespace hands up are judged on
    /// its ingress, like a bridge's (the devices are found by link kind,
    /// whatever their names; `attach.tunnels` in the file).
    #[arg(long)]
    no_tunnels: bool,
    /// On SIGINT/SIGTERM remove links, filters and pins. Without it the filter
    /// stays attached after the loader exits, so protection outlives it.
    #[arg(long)]
    detach_on_exit: bool,
    /// How to attach: tcx (Linux 6.6+), netlink (legacy clsact filter), or
    /// auto (tcx where available).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    attach_mode: AttachMode,
    /// Unix socket where drop events are published for `egress-loader events`
    /// (they are also written to stdout as JSON lines); "none" to disable.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    events_socket: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9184)
    /// [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Seconds between interface rescans.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    rescan: f64,
}

impl Args {
    fn overrides(&self) -> Overrides {
        Overrides {
            interfaces: self.ifaces.clone(),
            cgroups: self.cgroups.clone(),
            no_docker_networks: self.no_docker_networks,
            extra_blocks: self.block.clone(),
            smtp_ports: self.smtp_ports.clone().map(|p| p.0),
            smtp_rate: self.smtp_rate.clone(),
            smtp_burst: self.smtp_burst,
            scope: self.scope.clone(),
            dry_run: self.dry_run,
            no_endpoints: self.no_endpoints,
            no_tunnels: self.no_tunnels,
        }
    }

    /// The flags of `egress-loader run ..` read back from its command line
    /// (`reload` reads the running loader's); `None` if it is not `run`, or
    /// its flags do not parse.
    pub fn from_command_line(args: &[String]) -> Option<Self> {
        let [_, subcommand, ..] = args else {
            return None;
        };
        if subcommand != "run" {
            return None;
        }
        let run = <Self as clap::Args>::augment_args(clap::Command::new("run"));
        let matches = run.try_get_matches_from(&args[1..]).ok()?;
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).ok()
    }
}

#[cfg(test)]
impl Args {
    /// What `reload` takes from the flags, to compare two parses.
    pub fn described(&self) -> String {
        format!(
            "{:?} {:?} {:?}",
            self.config,
            self.overrides(),
            self.pin_dir.pins().root()
        )
    }
}

/// The policy a running loader started with `a` (in directory `cwd`) will
/// apply on SIGHUP; `None` without --config.
pub fn policy_for_reload(a: &Args, cwd: &std::path::Path) -> Result<Option<Policy>> {
    let Some(path) = &a.config else {
        return Ok(None);
    };
    Ok(Some(Policy::from_file(&cwd.join(path), &a.overrides())?))
}

pub fn main(a: Args) -> Result {
    let overrides = a.overrides();
    let config_path = match &a.config {
        Some(p) => Some(
            std::path::absolute(p)
                .map_err(|e| ConfigError::new("--config", format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let (policy, config_sha256) = match &config_path {
        Some(path) => {
            let (p, sha) = Policy::load(path, &overrides)?;
            (p, Some(sha))
        }
        None => (Policy::build(ConfigFile::default(), &overrides)?, None),
    };
    if !(0.05..=3600.0).contains(&a.rescan) {
        return Err(ConfigError::new(
            "--rescan",
            format!("{} is not between 0.05 and 3600 seconds", a.rescan),
        )
        .into());
    }
    let docker = a.engine.endpoint()?;
    let opts = RunOptions {
        policy,
        config_path,
        config_sha256,
        watch_config: !a.no_watch_config,
        state_file: state_file_arg(&a.state_file),
        overrides,
        pins: a.pin_dir.pins(),
        mode: a.attach_mode,
        detach_on_exit: a.detach_on_exit,
        rescan: Duration::from_secs_f64(a.rescan),
        events_socket: (a.events_socket.as_os_str() != "none").then_some(a.events_socket),
        docker,
        metrics_addr: a.metrics_addr,
    };
    current_thread()?.block_on(run(opts))
}
