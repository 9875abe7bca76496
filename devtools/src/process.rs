//! Printing and running commands: every external command is shown as a
//! shell line (`$ cmd args`) before it runs, and a program that is missing
//! is named as such.

use std::{
    env,
    ffi::{OsStr, OsString},
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Result, bail};

use crate::workspace::workspace_root;

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    match env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home).join("bin")),
        _ => env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo").join("bin")),
    }
}

/// `PATH` with `$CARGO_HOME/bin` appended when it is missing, so that tools
/// installed by `cargo install` (bpf-linker) are found by child processes.
fn child_path() -> Option<OsString> {
    let path = env::var_os("PATH").unwrap_or_default();
    let cargo_bin = cargo_bin_dir()?;
    if env::split_paths(&path).any(|dir| dir == cargo_bin) {
        return None;
    }
    let dirs = env::split_paths(&path).chain(std::iter::once(cargo_bin));
    env::join_paths(dirs).ok()
}

/// A `Command` for `program` whose `PATH` also contains `$CARGO_HOME/bin`.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(path) = child_path() {
        cmd.env("PATH", path);
    }
    cmd
}

/// A `Command` running the cargo that runs us (or `cargo` from `PATH`), in
/// the workspace root.
pub fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = command(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Quotes `arg` for display the way a POSIX shell would need it.
fn shell_quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command as a shell line: explicitly set variables (not `PATH`), the
/// program and its arguments. The program is shown by its file name when it
/// is cargo's absolute path, so lines read like what a person would type.
pub fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if key == "PATH" {
            continue;
        }
        if let Some(value) = value {
            words.push(format!("{}={}", key.to_string_lossy(), shell_quote(value)));
        }
    }
    let program = Path::new(cmd.get_program());
    let is_cargo = env::var_os("CARGO").is_some_and(|cargo| cargo == program.as_os_str());
    match program.file_name() {
        Some(name) if is_cargo => words.push(shell_quote(name)),
        _ => words.push(shell_quote(program.as_os_str())),
    }
    words.extend(cmd.get_args().map(shell_quote));
    words.join(" ")
}

/// Prints `$ cmd args`.
pub fn announce(cmd: &Command) {
    println!("$ {}", display(cmd));
}

fn spawn_error(cmd: &Command, err: std::io::Error) -> anyhow::Error {
    let line = display(cmd);
    if err.kind() == ErrorKind::NotFound {
        anyhow::anyhow!(
            "could not run `{line}`: {} not found on PATH",
            cmd.get_program().to_string_lossy()
        )
    } else {
        anyhow::Error::new(err).context(format!("could not run `{line}`"))
    }
}

/// Prints and runs `cmd` with inherited stdio; fails unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    announce(cmd);
    let status = cmd.status().map_err(|err| spawn_error(cmd, err))?;
    if !status.success() {
        bail!("`{}` failed: {status}", display(cmd));
    }
    Ok(())
}

/// Prints and runs `cmd`, capturing its output; the exit status is not checked.
/// `Ok(None)` means the program does not exist.
pub fn probe(cmd: &mut Command) -> Result<Option<Output>> {
    announce(cmd);
    match cmd.output() {
        Ok(output) => Ok(Some(output)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(spawn_error(cmd, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_what_a_shell_would_split() {
        let mut cmd = Command::new("/usr/bin/printf");
        cmd.env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("PATH", "/bin")
            .args(["a b", "it's", "--x=1", ""]);
        assert_eq!(
            display(&cmd),
            r#"RUSTFLAGS='-C target-feature=+crt-static' /usr/bin/printf 'a b' 'it'\''s' --x=1 ''"#
        );
    }

    #[test]
    fn missing_program_is_named() {
        let mut cmd = Command::new("egress-devtools-no-such-program");
        let err = run(&mut cmd).unwrap_err().to_string();
        assert!(
            err.contains("egress-devtools-no-such-program not found on PATH"),
            "{err}"
        );
        assert!(probe(&mut cmd).unwrap().is_none());
    }
}
