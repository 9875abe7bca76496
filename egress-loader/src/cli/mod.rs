//! The command line: one module per subcommand.

mod args;
mod check_config;
mod completions;
mod counters;
mod detach;
mod events;
mod explain;
mod install_unit;
mod manpages;
mod reload;
mod run;
mod status;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use egress_loader::{
    Error,
    error::Exit,
    kernel::system::{KERNEL_FLOOR, release},
};

#[derive(Parser)]
#[command(
    name = "egress-loader",
    version,
    about = "eBPF egress filter for container hosts: blocks cloud metadata services, rate-limits outbound SMTP",
    long_about = long_about(),
    after_help = "Examples:\n  \
        egress-loader run                          # docker0 and br-*, default policy\n  \
        egress-loader run --config /etc/egress-filter.toml\n  \
        egress-loader run --dry-run --smtp-rate 10/minute\n  \
        egress-loader counters                     # like iptables -L -v\n  \
        egress-loader status --json\n  \
        egress-loader verify                       # prove each attached bridge drops metadata traffic\n  \
        egress-loader explain --to 169.254.169.254:80/tcp   # what the filter would do, nothing sent\n  \
        egress-loader run --metrics-addr 127.0.0.1:9184   # Prometheus /metrics\n  \
        egress-loader reload                       # re-read the running loader's --config\n  \
        egress-loader detach                       # remove everything\n  \
        egress-loader install-unit --root /host    # from the image: the systemd unit onto the host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    Run(Box<run::Args>),
    Reload(reload::Args),
    Events(events::Args),
    Counters(counters::Args),
    Status(status::Args),
    Verify(verify::Args),
    Explain(explain::Args),
    Detach(detach::Args),
    CheckConfig(check_config::Args),
    InstallUnit(install_unit::Args),
    Completions(completions::Args),
    #[command(hide = true)]
    Manpages(manpages::Args),
}

/// The long `--help` text: what the filter does, the kernel it needs, and
/// the exit status table (from [`Exit`], the one place it is written).
fn long_about() -> String {
    format!(
        "eBPF egress filter for container hosts.\n\n\
        A tc classifier on the ingress hook of each Docker bridge (where containers' traffic \
        leaves them) drops traffic to cloud instance metadata services (169.254.169.254 and \
        friends) and rate-limits new outbound SMTP connections, like the DOCKER-USER iptables \
        rules it replaces. The filter and its counters are pinned on bpffs, so protection \
        outlives the loader.\n\n\
        Needs Linux {} or later (TCX attach from 6.6; below it a legacy tc filter).\n\n\
        {}",
        release(KERNEL_FLOOR),
        Exit::table().trim_end()
    )
}

pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`counters | head`), like other CLI tools.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let result = match cli.command {
        Command::Run(a) => run::main(*a),
        Command::Reload(a) => reload::main(a),
        Command::Events(a) => events::main(a),
        Command::Counters(a) => counters::main(a),
        Command::Status(a) => status::main(a),
        Command::Verify(a) => verify::main(a),
        Command::Explain(a) => explain::main(a),
        Command::Detach(a) => detach::main(a),
        Command::CheckConfig(a) => check_config::main(a),
        Command::InstallUnit(a) => install_unit::main(a),
        Command::Completions(a) => completions::main(a),
        Command::Manpages(a) => manpages::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress-loader: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(e.exit_code())
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_valid() {
        Cli::command().debug_assert();
    }

    /// The engine group's flags carry no help of their own: each
    /// subcommand that flattens it must give them some.
    #[test]
    fn every_engine_flag_has_help() {
        for sub in Cli::command().get_subcommands() {
            for arg in sub.get_arguments() {
                if matches!(arg.get_id().as_str(), "docker_host" | "no_docker") {
                    assert!(
                        arg.get_help().is_some(),
                        "{} --{}",
                        sub.get_name(),
                        arg.get_id()
                    );
                }
            }
        }
    }

    /// `reload` reads the running loader's flags back from its command
    /// line as `run` alone parses them, which the whole command line
    /// accepts exactly when it is `run`.
    #[test]
    fn a_run_command_line_reads_back_as_the_command_line_does() {
        for line in [
            "egress-loader run",
            "/usr/bin/egress-loader run --config rel.toml --smtp-rate 2/minute --block 10.0.0.0/8",
            "egress-loader run -c /etc/e.toml --no-docker --pin-dir /sys/fs/bpf/x",
            "egress-loader run --config a.toml --docker-host unix:///d.sock --no-docker",
            "egress-loader run --no-such-flag",
            "egress-loader status --json",
            "egress-loader",
            "egress-loader --version",
        ] {
            let args: Vec<String> = line.split(' ').map(String::from).collect();
            let whole = match Cli::try_parse_from(&args) {
                Ok(Cli {
                    command: Command::Run(a),
                }) => Some(*a),
                _ => None,
            };
            let alone = run::Args::from_command_line(&args);
            assert_eq!(
                alone.as_ref().map(run::Args::described),
                whole.as_ref().map(run::Args::described),
                "{line}"
            );
        }
    }

    /// `cargo xtask run` passes a first word through as a subcommand and puts
    /// `run` before a first flag; that stays right only while `run` takes no
    /// positional argument and no subcommand is spelt like a flag.
    #[test]
    fn a_first_word_can_only_be_a_subcommand() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("a run subcommand");
        let positionals: Vec<_> = run.get_positionals().map(|a| a.get_id()).collect();
        assert!(positionals.is_empty(), "run takes {positionals:?}");
        for sub in cli.get_subcommands() {
            for name in std::iter::once(sub.get_name()).chain(sub.get_all_aliases()) {
                assert!(!name.starts_with('-'), "{name}");
            }
        }
    }
}
