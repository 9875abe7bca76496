//! `cargo xtask`: developer and CI tasks for the egress filter workspace.
//!
//! Each subcommand lives in its own module; this file only parses the command
//! line and dispatches.

mod bench;
mod build;
mod demo;
mod image;
mod package;
mod run;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer and CI tasks for the eBPF egress filter",
    long_about = "Developer and CI tasks for the eBPF egress filter.\n\n\
        Every external command is printed (`$ cmd args`) before it runs. \
        `setup` is idempotent: steps that are already satisfied are skipped, \
        so the other subcommands run it every time.",
    after_help = "Examples:\n  \
        cargo xtask setup                 # install the eBPF toolchain (nightly rust-src, LLVM 22, bpf-linker)\n  \
        cargo xtask build --release       # build egress-loader with the embedded eBPF object\n  \
        cargo xtask run -- --help         # run `egress-loader run --help` as root\n  \
        cargo xtask run -- counters       # run `egress-loader counters`\n  \
        cargo xtask test                  # the whole test suite (needs root)\n  \
        cargo xtask test -- -p egress-tests -- --nocapture\n  \
        cargo xtask demo                  # the narrated end-to-end demo\n  \
        cargo xtask bench --quick         # benchmarks vs no filter and iptables (under 3 minutes)\n  \
        cargo xtask image                 # the container image (FROM scratch) into DOCKER_HOST's engine\n  \
        cargo xtask package               # the Debian package (target/debian/*.deb), checked by lintian"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Setup(setup::Options),
    Build(build::Options),
    Run(run::Options),
    Test(test::Options),
    Demo(demo::Options),
    Bench(bench::Options),
    Image(image::Options),
    Package(package::Options),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(opts) => setup::main(&opts),
        Command::Build(opts) => build::main(&opts),
        Command::Run(opts) => run::main(&opts),
        Command::Test(opts) => test::main(&opts),
        Command::Demo(opts) => demo::main(&opts),
        Command::Bench(opts) => bench::main(&opts),
        Command::Image(opts) => image::main(&opts),
        Command::Package(opts) => package::main(&opts),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::Cli;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn passthrough_arguments() {
        let parse = |args: &[&str]| format!("{:?}", Cli::try_parse_from(args).unwrap().command);
        let run = parse(&["xtask", "run", "--debug", "--", "counters", "--json"]);
        assert!(
            run.contains("debug: true") && run.contains(r#"["counters", "--json"]"#),
            "{run}"
        );
        let run = parse(&["xtask", "run", "--", "--iface", "docker0"]);
        assert!(run.contains(r#"["--iface", "docker0"]"#), "{run}");
        let test = parse(&[
            "xtask",
            "test",
            "--",
            "-p",
            "egress-tests",
            "--",
            "--nocapture",
        ]);
        assert!(
            test.contains(r#"["-p", "egress-tests", "--", "--nocapture"]"#),
            "{test}"
        );
        assert!(Cli::try_parse_from(["xtask", "run", "--debug", "--release"]).is_err());
        let bench = parse(&[
            "xtask", "bench", "--quick", "--reps", "3", "--", "--only", "main",
        ]);
        assert!(
            bench.contains("quick: true")
                && bench.contains("reps: Some(3)")
                && bench.contains(r#"["--only", "main"]"#),
            "{bench}"
        );
        assert!(Cli::try_parse_from(["xtask", "bench", "--write-docs"]).is_err());
    }
}
