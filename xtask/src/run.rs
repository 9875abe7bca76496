//! `cargo xtask run`: setup, build the loader and run it as root.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Result, bail};
use clap::Args;

use crate::{setup, util};

/// Build egress-loader and run it as root.
///
/// Runs `setup`, builds the loader (release profile unless --debug), prints
/// the exact command and replaces this process with it. Arguments after `--`
/// go to the loader: as they are when the first one is a word (a subcommand,
/// such as `verify` or `counters`), after `run` when it is a flag or there
/// is none. That is the loader's own rule, so there is no list of
/// subcommands to keep: `egress-loader run` takes no positional argument,
/// so a first word can only be a subcommand (a misspelt one gets the
/// loader's own "unrecognized subcommand" error; the loader's unit tests
/// keep `run` free of positional arguments).
/// Loading eBPF needs root: when not root, the loader is started through
/// sudo.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask run                        # egress-loader run\n  \
    cargo xtask run -- --help              # egress-loader run --help\n  \
    cargo xtask run -- counters            # egress-loader counters\n  \
    cargo xtask run -- verify              # egress-loader verify\n  \
    cargo xtask run --debug -- status      # debug build, egress-loader status")]
pub struct Options {
    /// Use the release profile (the default).
    #[arg(long, conflicts_with = "debug")]
    release: bool,

    /// Use the debug profile instead of release.
    #[arg(long)]
    debug: bool,

    /// Arguments for egress-loader (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "LOADER_ARGS"
    )]
    args: Vec<OsString>,
}

/// The loader's argument list: `args` as they are if the first one names a
/// subcommand (it does not start with `-`), else `run` followed by `args`.
fn loader_args(args: &[OsString]) -> Vec<OsString> {
    let explicit = args
        .first()
        .is_some_and(|first| !first.as_encoded_bytes().starts_with(b"-"));
    if explicit {
        args.to_vec()
    } else {
        std::iter::once(OsString::from("run"))
            .chain(args.iter().cloned())
            .collect()
    }
}

pub fn main(opts: &Options) -> Result<()> {
    // Decide how to get root before spending time on a build.
    let sudo = if util::is_root()? {
        None
    } else {
        match util::find_program("sudo") {
            Some(sudo) => {
                println!("not root: the loader will be started through sudo");
                Some(sudo)
            }
            None => bail!(
                "egress-loader needs root (it loads eBPF programs) and sudo was not found; run this as root"
            ),
        }
    };

    setup::ensure(false)?;
    let release = !opts.debug;
    let bin = util::build_loader(release)?;

    let mut cmd = match sudo {
        Some(sudo) => {
            let mut cmd = Command::new(sudo);
            cmd.args(["--preserve-env=RUST_LOG", "--"]).arg(&bin);
            cmd
        }
        None => Command::new(&bin),
    };
    cmd.args(loader_args(&opts.args));
    util::announce(&cmd);
    // `exec` only returns on failure.
    let err = cmd.exec();
    bail!("could not execute `{}`: {err}", util::display(&cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn prepends_run_unless_a_subcommand_is_given() {
        assert_eq!(loader_args(&[]), strings(&["run"]));
        assert_eq!(
            loader_args(&strings(&["--iface", "docker0"])),
            strings(&["run", "--iface", "docker0"])
        );
        assert_eq!(loader_args(&strings(&["counters"])), strings(&["counters"]));
        assert_eq!(
            loader_args(&strings(&["run", "--dry-run"])),
            strings(&["run", "--dry-run"])
        );
        assert_eq!(
            loader_args(&strings(&["--help"])),
            strings(&["run", "--help"])
        );
        assert_eq!(
            loader_args(&strings(&["-c", "/etc/egress-filter.toml"])),
            strings(&["run", "-c", "/etc/egress-filter.toml"])
        );
    }

    #[test]
    fn every_subcommand_passes_through() {
        for sub in [
            "run",
            "reload",
            "events",
            "counters",
            "status",
            "verify",
            "detach",
            "check-config",
            "help",
        ] {
            assert_eq!(
                loader_args(&strings(&[sub, "--pin-dir", "/sys/fs/bpf/x"])),
                strings(&[sub, "--pin-dir", "/sys/fs/bpf/x"]),
                "{sub}"
            );
        }
        // A misspelt subcommand reaches the loader, which names it.
        assert_eq!(loader_args(&strings(&["verfy"])), strings(&["verfy"]));
    }
}
