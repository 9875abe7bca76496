//! Shared helpers: locating the workspace, printing and running commands.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

/// The package whose build script builds and embeds the eBPF object.
pub const LOADER_PACKAGE: &str = "egress-loader";

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", manifest_dir.display()))
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> Result<PathBuf> {
    let root = workspace_root()?;
    Ok(match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    })
}

/// The path of the built `egress-loader` binary for a profile.
pub fn loader_bin(release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let bin = target_dir()?.join(profile).join(LOADER_PACKAGE);
    if !bin.is_file() {
        bail!(
            "{} does not exist although the build succeeded",
            bin.display()
        );
    }
    Ok(bin)
}

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

/// A `Command` running the cargo that runs us (or `cargo` from `PATH`).
pub fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = command(cargo);
    if let Ok(root) = workspace_root() {
        cmd.current_dir(root);
    }
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

/// Whether the effective user is root (read from `/proc/self/status`).
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let uids = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .context("no Uid: line in /proc/self/status")?;
    // Real, effective, saved, filesystem.
    let effective = uids
        .split_whitespace()
        .nth(1)
        .context("malformed Uid: line in /proc/self/status")?;
    Ok(effective == "0")
}

/// Whether we run under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|ci| ci.eq_ignore_ascii_case("true") || ci == "1")
}

/// Looks for `program` on `PATH`, then in the sbin directories that a
/// non-root `PATH` often lacks.
pub fn find_program(program: &str) -> Option<PathBuf> {
    which::which(program).ok().or_else(|| {
        ["/usr/local/sbin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|dir| Path::new(dir).join(program))
            .find(|path| path.is_file())
    })
}

/// Builds `egress-loader` (whose build script builds the eBPF object) and
/// returns the absolute path of the binary.
pub fn build_loader(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", LOADER_PACKAGE]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    loader_bin(release)
}
