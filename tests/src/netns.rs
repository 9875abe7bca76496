//! Named network namespaces (`ip netns add`) and processes/threads inside
//! them.
//!
//! Commands enter a namespace with `nsenter --net=/var/run/netns/NAME`, which
//! switches only the network namespace. `ip netns exec` is deliberately not
//! used: it remounts /sys, which hides /sys/fs/bpf and the cgroup mounts from
//! the command (docs/design.md, "Test topology without touching the host").

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Where `ip netns` keeps its bind mounts.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Serialises `ip netns add/del` within this process: the first `add` on a
/// machine sets up the shared /var/run/netns mount, and concurrent first
/// calls can race.
pub(crate) static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A named network namespace, deleted (`ip netns del`) on drop. Deleting the
/// namespace destroys the interfaces in it, including veth ends whose peers
/// live elsewhere.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace named `prefix` + a unique suffix.
    pub fn new(prefix: &str) -> Result<Self> {
        Self::create(&crate::unique_name(prefix))
    }

    /// Creates a namespace with exactly this name, brings `lo` up and
    /// disables IPv6 duplicate address detection for interfaces created in it
    /// later (so addresses are usable at once).
    pub fn create(name: &str) -> Result<Self> {
        anyhow::ensure!(
            !name.is_empty() && !name.contains('/') && name.len() < 64,
            "bad namespace name {name:?}"
        );
        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let out = Command::new("ip")
                .args(["netns", "add", name])
                .output()
                .context("running `ip netns add`")?;
            if !out.status.success() {
                bail!(
                    "ip netns add {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        // From here on Drop deletes the namespace, also if setup fails.
        let ns = NetNs {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        // IPv6 can be disabled on a machine; DAD settings are then moot.
        for key in [
            "net.ipv6.conf.all.accept_dad",
            "net.ipv6.conf.default.accept_dad",
        ] {
            let _ = ns.sysctl(key, "0");
        }
        Ok(ns)
    }

    /// Names the network namespace of process `pid` (a container's) with
    /// `ip netns attach`, so the harness can enter it; dropping removes the
    /// name only (the process keeps its namespace).
    pub fn attach(prefix: &str, pid: u32) -> Result<Self> {
        let name = crate::unique_name(prefix);
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("ip")
            .args(["netns", "attach", &name, &pid.to_string()])
            .output()
            .context("running `ip netns attach`")?;
        if !out.status.success() {
            bail!(
                "ip netns attach {name} {pid} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(NetNs { name })
    }

    /// The namespace's name as known to `ip netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_RUN_DIR).join(&self.name)
    }

    /// `--net=/var/run/netns/NAME`, the nsenter argument.
    pub fn nsenter_arg(&self) -> OsString {
        let mut s = OsString::from("--net=");
        s.push(self.path());
        s
    }

    /// A `Command` that runs `program` inside the namespace
    /// (`nsenter --net=PATH -- program`). Add arguments, stdio etc. as usual.
    /// nsenter execs the program without forking, so the child's pid is the
    /// program's pid.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(self.nsenter_arg()).arg("--").arg(program);
        cmd
    }

    fn command_argv<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Command> {
        let (program, args) = argv.split_first().context("empty argv")?;
        let mut cmd = self.command(program);
        cmd.args(args);
        Ok(cmd)
    }

    /// Runs `argv` inside the namespace and waits for it. Fails (with the
    /// command line, exit status and output in the error) unless it exits 0.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        let out = self.exec_unchecked(argv)?;
        if !out.status.success() {
            bail!(
                "in netns {}: `{}` failed ({}): {}{}",
                self.name,
                display_argv(argv),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(out)
    }

    /// Runs `argv` inside the namespace and returns its output whatever the
    /// exit status. Fails only if it cannot be started.
    pub fn exec_unchecked<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        self.command_argv(argv)?
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("in netns {}: running `{}`", self.name, display_argv(argv)))
    }

    /// [`exec`](Self::exec), returning stdout as a string.
    pub fn exec_stdout<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.exec(argv)?.stdout).into_owned())
    }

    /// `ip ARGS...` inside the namespace; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push("ip");
        argv.extend_from_slice(args);
        self.exec_stdout(&argv)
    }

    /// `sysctl -w KEY=VALUE` inside the namespace (net.* keys are per
    /// namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Starts `argv` inside the namespace in the background (stdin null,
    /// stdout/stderr inherited). The process is killed when the returned
    /// guard is dropped.
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<ChildGuard> {
        let mut cmd = self.command_argv(argv)?;
        cmd.stdin(Stdio::null());
        ChildGuard::spawn(cmd, format!("{} (netns {})", display_argv(argv), self.name))
    }

    /// Runs `f` on a fresh thread that first joins this namespace
    /// (`setns(CLONE_NEWNET)`), and waits for it. Sockets created inside `f`
    /// belong to the namespace and keep belonging to it when they are moved
    /// to other threads. A panic in `f` is propagated to the caller.
    pub fn run_in<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        let name = &self.name;
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> Result<R> {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into netns {name}"))?;
                drop(file);
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// Interface names in the namespace.
    pub fn links(&self) -> Result<Vec<String>> {
        Ok(crate::parse_link_names(&self.ip(&["-o", "link", "show"])?))
    }

    /// Whether `dev` is administratively up and has carrier (`UP` and
    /// `LOWER_UP` in its flags).
    pub fn link_is_up(&self, dev: &str) -> bool {
        let Ok(out) = self.ip(&["-o", "link", "show", "dev", dev]) else {
            return false;
        };
        let flags = out
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(f, _)| f)
            .unwrap_or("");
        let flags: Vec<&str> = flags.split(',').collect();
        flags.contains(&"UP") && flags.contains(&"LOWER_UP")
    }

    /// Waits until [`link_is_up`](Self::link_is_up) holds for `dev`.
    pub fn wait_link_up(&self, dev: &str, timeout: Duration) -> Result<()> {
        if !crate::wait_until(timeout, || self.link_is_up(dev)) {
            bail!(
                "in netns {}: link {dev} not up after {timeout:?}: {}",
                self.name,
                self.ip(&["link", "show", "dev", dev]).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Waits until no IPv6 address in the namespace is tentative (DAD still
    /// running).
    pub fn wait_ipv6_settled(&self, timeout: Duration) -> Result<()> {
        let settled = || {
            self.ip(&["-6", "-o", "addr", "show", "tentative"])
                .map(|s| s.trim().is_empty())
                .unwrap_or(false)
        };
        if !crate::wait_until(timeout, settled) {
            bail!(
                "in netns {}: IPv6 addresses still tentative after {timeout:?}: {}",
                self.name,
                self.ip(&["-6", "addr", "show", "tentative"])
                    .unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

pub(crate) fn display_argv<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A background process, killed (SIGKILL) and reaped on drop if it is still
/// running.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    status: Option<ExitStatus>,
    desc: String,
}

impl ChildGuard {
    /// Spawns `cmd`; `desc` names it in messages.
    pub fn spawn(mut cmd: Command, desc: impl Into<String>) -> Result<Self> {
        let desc = desc.into();
        let child = cmd.spawn().with_context(|| format!("spawning {desc}"))?;
        Ok(Self {
            child,
            status: None,
            desc,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child (e.g. to take piped stdio).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Reads the JSON lines of the process's (piped) stdout on a thread;
    /// lines that are not JSON are skipped.
    pub fn json_lines(&mut self) -> std::sync::mpsc::Receiver<serde_json::Value> {
        use std::io::BufRead as _;
        let stdout = self.child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        rx
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Sends `sig` if the process has not been reaped yet.
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if self.try_wait()?.is_none() {
            let pid = Pid::from_raw(i32::try_from(self.child.id()).context("pid")?);
            nix::sys::signal::kill(pid, sig)
                .with_context(|| format!("kill -{sig} {}", self.desc))?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        if let Some(st) = self.status {
            return Ok(st);
        }
        let st = self.child.wait()?;
        self.status = Some(st);
        Ok(st)
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL if it is still running.
    /// Returns the exit status and whether it exited within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Result<(ExitStatus, bool)> {
        self.signal(Signal::SIGTERM)?;
        match self.wait_timeout(timeout)? {
            Some(st) => Ok((st, true)),
            None => Ok((self.kill()?, false)),
        }
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        let st = self.child.wait()?;
        self.status = Some(st);
        Ok(st)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("warning: killing {}: {e:#}", self.desc);
        }
    }
}
