//! The benchmark's world: a Docker-like host in network namespaces (the
//! harness's `Topology::docker_like`), a private bpffs for the loader's pins,
//! an iperf3 server in the cloud namespace, and a scratch directory.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use egress_tests::{BpffsMount, ChildGuard, LoaderProcess, NetNs, Topology, addrs};

/// The "internet" host every workload talks to (in the cloud namespace).
pub const SERVER: IpAddr = IpAddr::V4(addrs::SMTP_V4);
pub const IPERF_PORT: u16 = 5201;
pub const CRR_PORT: u16 = 8080;
pub const RR_PORT: u16 = 8081;
pub const UDP_PORT: u16 = 9000;

pub struct World {
    pub topo: Topology,
    pub bpffs: BpffsMount,
    pub scratch: PathBuf,
    _iperf: ChildGuard,
    next_pin: u32,
}

impl World {
    pub fn build() -> Result<Self> {
        let topo = Topology::docker_like_with("bench", 1).context("building the topology")?;
        // Short-connection workloads open tens of thousands of connections
        // a minute from one address: let the container reuse TIME_WAIT
        // ports (1 s after their last use) from the whole port range.
        let c = topo.container(0).ns();
        c.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        c.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        let bpffs = BpffsMount::try_new()?;
        let scratch = std::env::temp_dir().join(format!("egress-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        let server = SERVER.to_string();
        let port = IPERF_PORT.to_string();
        let mut cmd = topo.cloud().command("iperf3");
        cmd.args(["-s", "-B", &server, "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let iperf = ChildGuard::spawn(cmd, "iperf3 -s (cloud namespace)")?;
        let sa = SocketAddr::new(SERVER, IPERF_PORT);
        let up = egress_tests::wait_until(Duration::from_secs(5), || {
            egress_tests::traffic::tcp_connect(topo.cloud(), sa, Duration::from_millis(200)).is_ok()
        });
        if !up {
            bail!("iperf3 server did not start listening on {sa}");
        }
        Ok(Self {
            topo,
            bpffs,
            scratch,
            _iperf: iperf,
            next_pin: 0,
        })
    }

    pub fn host(&self) -> &NetNs {
        self.topo.host()
    }

    pub fn cloud(&self) -> &NetNs {
        self.topo.cloud()
    }

    pub fn client(&self) -> &NetNs {
        self.topo.container(0).ns()
    }

    /// A fresh pin directory on the private bpffs.
    pub fn new_pin_dir(&mut self) -> Result<PathBuf> {
        self.next_pin += 1;
        self.bpffs.subdir(&format!("run{}", self.next_pin))
    }

    /// A loader in the host namespace filtering docker0, with a pin
    /// directory of its own, detaching on exit; `extra` adds to its flags.
    pub fn start_loader(&mut self, extra: &[&str]) -> Result<LoaderProcess> {
        let pin_dir = self.new_pin_dir()?;
        let mut args = vec!["--iface", "docker0", "--detach-on-exit"];
        args.extend_from_slice(extra);
        LoaderProcess::run_in_ns(self.host(), &pin_dir, &args)
    }

    /// Writes `text` to a file in the scratch directory.
    pub fn scratch_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.scratch.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Runs `argv` in `ns` with `input` on stdin; fails unless it exits 0.
pub fn exec_with_input(ns: &NetNs, argv: &[&str], input: &str) -> Result<Output> {
    let (program, args) = argv.split_first().context("empty argv")?;
    let mut cmd: Command = ns.command(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {} in netns {}", argv.join(" "), ns.name()))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let writer = {
        let input = input.to_owned();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()))
    };
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "in netns {}: `{}` failed ({}): {}",
            ns.name(),
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// First line of `program --version` (or `-V`), for the report.
pub fn tool_version(program: &str, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "not found".into())
}

/// `VmRSS` and `VmHWM` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// `v` as JSON, cut to 300 characters, for error messages.
pub fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    s.chars().take(300).collect()
}
