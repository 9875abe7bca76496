//! Running the `egress-loader` binary inside a test's network namespace.
//!
//! Only the CLI surface is assumed:
//! `egress-loader run [--pin-dir DIR] [...]`, and one-shot
//! `status|counters|detach [--pin-dir DIR] [--json]`, `check-config FILE`.
//! JSON output is only assumed to be valid JSON.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use egress_devtools::workspace::LOADER_PACKAGE;

use crate::netns::{ChildGuard, NetNs};

pub use egress_devtools::workspace::LOADER_BIN_ENV;

/// A unique path for the loader's events socket (`run --events-socket`),
/// removed on drop.
pub struct EventsSocket(PathBuf);

impl EventsSocket {
    /// `$TMPDIR/egress-<tag>-<unique>.sock` (not created: the loader makes it).
    pub fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!("egress-{tag}-{}.sock", crate::unique_suffix())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as an argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp dir")
    }
}

impl Drop for EventsSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How long a dropped [`LoaderProcess`] gets after SIGTERM before SIGKILL.
const DROP_TERM_TIMEOUT: Duration = Duration::from_secs(5);

/// Path of the loader binary: `$EGRESS_LOADER_BIN`, else `egress-loader` in
/// the cargo profile directory of the running test executable
/// (`target/debug/deps/<test>-<hash>` -> `target/debug/egress-loader`).
pub fn loader_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(LOADER_BIN_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{LOADER_BIN_ENV}={} does not exist", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        if dir.file_name() == Some(OsStr::new("deps"))
            && let Some(profile) = dir.parent()
        {
            candidates.push(profile.join(LOADER_PACKAGE));
        }
        candidates.push(dir.join(LOADER_PACKAGE));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "egress-loader binary not found next to {} and {LOADER_BIN_ENV} is not set; \
             build it (`cargo build -p egress-loader`) or run `cargo xtask test`",
                exe.display()
            )
        })
}

fn nsenter(ns_path: &Path, program: &Path) -> Command {
    let mut arg = std::ffi::OsString::from("--net=");
    arg.push(ns_path);
    let mut cmd = Command::new("nsenter");
    cmd.arg(arg).arg("--").arg(program);
    cmd
}

fn set_default_log_env(cmd: &mut Command) {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
}

/// Runs `egress-loader ARGS...` once inside `ns` and returns its output
/// whatever the exit status (e.g. `&["counters", "--pin-dir", dir, "--json"]`).
pub fn loader_cli<S: AsRef<OsStr>>(ns: &NetNs, args: &[S]) -> Result<Output> {
    let bin = loader_bin()?;
    let mut cmd = nsenter(&ns.path(), &bin);
    cmd.args(args).stdin(Stdio::null());
    set_default_log_env(&mut cmd);
    cmd.output()
        .with_context(|| format!("running {} in netns {}", bin.display(), ns.name()))
}

/// The default readiness test of [`LoaderProcess::wait_ready`] on the
/// `status --json` output: any JSON value, except that if it is an object
/// with an `interfaces` array, that array must be non-empty (`status` can
/// succeed while the loader is still starting, before it has attached
/// anything). Use [`LoaderProcess::wait_ready_until`] when nothing is
/// expected to be attached yet.
pub fn default_ready(status: &serde_json::Value) -> bool {
    match status.get("interfaces") {
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        _ => true,
    }
}

/// Describes an `Output` for error messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// A running `egress-loader run` inside a network namespace, with stdout and
/// stderr going to a log file. On drop it gets SIGTERM (then SIGKILL after
/// 5 s) and, if the thread is panicking, its log is printed.
#[derive(Debug)]
pub struct LoaderProcess {
    child: ChildGuard,
    bin: PathBuf,
    ns_name: String,
    ns_path: PathBuf,
    pin_dir: PathBuf,
    log_path: PathBuf,
}

impl LoaderProcess {
    /// Spawns `nsenter --net=NS <bin> run --pin-dir PIN_DIR ARGS...` with
    /// the binary from [`loader_bin`], and `--cgroup none` unless ARGS name
    /// a `--cgroup` (the cgroup hooks attach only where a test says).
    pub fn run_in_ns<S: AsRef<OsStr>>(ns: &NetNs, pin_dir: &Path, args: &[S]) -> Result<Self> {
        Self::run_bin_in_ns(&loader_bin()?, ns, pin_dir, args)
    }

    /// [`run_in_ns`](Self::run_in_ns) with an explicit binary (for a
    /// specific build, or a stand-in in the harness's own tests).
    pub fn run_bin_in_ns<S: AsRef<OsStr>>(
        bin: &Path,
        ns: &NetNs,
        pin_dir: &Path,
        args: &[S],
    ) -> Result<Self> {
        Self::run_bin_in_ns_with_env(bin, ns, pin_dir, args, &[])
    }

    /// [`run_in_ns`](Self::run_in_ns) with these environment variables
    /// set for the loader alone (not for the other tests of the process).
    pub fn run_in_ns_with_env<S: AsRef<OsStr>>(
        ns: &NetNs,
        pin_dir: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::run_bin_in_ns_with_env(&loader_bin()?, ns, pin_dir, args, env)
    }

    fn run_bin_in_ns_with_env<S: AsRef<OsStr>>(
        bin: &Path,
        ns: &NetNs,
        pin_dir: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let bin = bin.to_owned();
        let log_path =
            std::env::temp_dir().join(format!("egress-loader-{}.log", crate::unique_suffix()));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = nsenter(&ns.path(), &bin);
        cmd.arg("run").arg("--pin-dir").arg(pin_dir);
        // Cgroups are not per network namespace: a loader that attached its
        // cgroup hooks by itself (`auto`) could pick the machine's own
        // /docker or kubepods. Tests attach them only where they say.
        if !args.iter().any(|a| a.as_ref() == "--cgroup") {
            cmd.args(["--cgroup", "none"]);
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        set_default_log_env(&mut cmd);
        let desc = format!(
            "{} run --pin-dir {} {} (netns {})",
            bin.display(),
            pin_dir.display(),
            crate::netns::display_argv(args),
            ns.name()
        );
        let child = ChildGuard::spawn(cmd, desc)?;
        Ok(Self {
            child,
            bin,
            ns_name: ns.name().to_owned(),
            ns_path: ns.path(),
            pin_dir: pin_dir.to_owned(),
            log_path,
        })
    }

    /// Polls `status --pin-dir DIR --json` (inside the namespace) until it
    /// succeeds with valid JSON that passes [`default_ready`], and returns
    /// that JSON. Fails if the process exits first or `timeout` passes; the
    /// error includes the log.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<serde_json::Value> {
        self.wait_ready_until(timeout, default_ready)
    }

    /// [`wait_ready`](Self::wait_ready) with a custom readiness test on the
    /// status JSON (e.g. `|_| true` for "status works at all", or "this
    /// interface is attached").
    pub fn wait_ready_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "egress-loader exited ({st}) before becoming ready; log:\n{}",
                    self.log()
                );
            }
            let last = match self.cli("status", &["--json"]) {
                Ok(out) if out.status.success() => {
                    match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                        Ok(v) if ready(&v) => return Ok(v),
                        Ok(v) => format!("not ready yet: {v}"),
                        Err(e) => format!("invalid JSON ({e}): {}", describe_output(&out)),
                    }
                }
                Ok(out) => describe_output(&out),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "egress-loader not ready after {timeout:?}; last `status`: {last}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `<bin> SUBCOMMAND --pin-dir DIR ARGS...` in the loader's
    /// namespace; returns the output whatever the exit status.
    pub fn cli<S: AsRef<OsStr>>(&self, subcommand: &str, args: &[S]) -> Result<Output> {
        let mut cmd = nsenter(&self.ns_path, &self.bin);
        cmd.arg(subcommand)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(args)
            .stdin(Stdio::null());
        set_default_log_env(&mut cmd);
        cmd.output().with_context(|| {
            format!(
                "running {} {subcommand} in netns {}",
                self.bin.display(),
                self.ns_name
            )
        })
    }

    /// `<bin> SUBCOMMAND --pin-dir DIR --json ARGS...`; requires success and
    /// valid JSON on stdout.
    pub fn cli_json(&self, subcommand: &str, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(subcommand, &all)?;
        if !out.status.success() {
            bail!(
                "egress-loader {subcommand} failed: {}",
                describe_output(&out)
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "egress-loader {subcommand}: invalid JSON: {}",
                describe_output(&out)
            )
        })
    }

    /// SIGKILL (no cleanup in the loader) and wait.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.child.kill()
    }

    /// SIGTERM and wait up to `timeout`; fails (after SIGKILL) if it did not
    /// exit in time. Returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let (st, in_time) = self.child.terminate(timeout)?;
        if !in_time {
            bail!(
                "egress-loader ignored SIGTERM for {timeout:?} (killed); log:\n{}",
                self.log()
            );
        }
        Ok(st)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Process id (of the loader itself: nsenter execs it).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The pin directory passed with `--pin-dir`.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The loader binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path.display()))
    }
}

impl Drop for LoaderProcess {
    fn drop(&mut self) {
        if self.child.is_running() {
            let _ = self.child.terminate(DROP_TERM_TIMEOUT);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- egress-loader log ({}) ----\n{}\n---- end of egress-loader log ----",
                self.log_path.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}
