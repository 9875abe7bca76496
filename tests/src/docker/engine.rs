//! containerd + dockerd inside a network namespace, torn down on drop.
//!
//! ```text
//!   "dkhost" netns (engine's)                     "cloud" netns
//!   docker0 172.17.0.1/16, br-<id> ...            eth0 192.0.2.2/24
//!   containers' veths, Docker's iptables rules    svc0 (dummy, or lo): 169.254.169.254,
//!   uplink 192.0.2.1/24 ----------- veth -------    169.254.170.2, 198.51.100.25, ...
//!   default route via 192.0.2.2                   no forwarding: nothing goes further
//! ```
//!
//! What the daemons share with the machine, and how it is kept apart:
//! - network: both run with `nsenter --net` in dkhost, so docker0, every
//!   container network namespace's veth peer, and Docker's iptables rules
//!   live there; `--network host` containers inherit dkhost through
//!   containerd, which is why containerd is started here rather than found
//!   on the machine (a system containerd would put them in the root
//!   namespace), and why [`DockerHost::start`] checks containerd's namespace;
//! - mounts: the root mount namespace (so /sys/fs/cgroup stays visible, see
//!   docs/design.md); dockerd's overlay and nsfs mounts all fall under the temp
//!   directory and are unmounted on drop;
//! - cgroups: containers go under a cgroup parent of their own, removed on
//!   drop after any process left in it is killed;
//! - files outside the temp directory, created by these versions whatever
//!   their flags say: `/run/docker/plugins` (dockerd), `/run/containerd/s`
//!   (shim sockets) and, with dockerd < 23, `/etc/docker/key.json` unless
//!   redirected (it is, through `deprecated-key-path`); each is removed on
//!   drop if it did not exist before and is empty.

use std::ffi::OsStr;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use egress_devtools::image::is_static_elf;
use egress_devtools::machine::{DOCKER_ENGINE_TOOLS, SBIN_DIRS, find_program, in_ci};
use nix::mount::MntFlags;
use nix::sys::signal::Signal;

use crate::addrs;
use crate::netns::{ChildGuard, NetNs};

/// How long the daemons get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Tag of the busybox test image (in the test's own engine; `images`
/// builds it, [`DockerHost::run_sleeper`] runs it).
pub const BUSYBOX_IMAGE: &str = "egress-e2e-busybox:latest";
/// Default bound on one `docker` CLI call.
pub const DOCKER_CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Grace period after SIGTERM before SIGKILL when stopping a daemon.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Programs the engine needs besides [`DOCKER_ENGINE_TOOLS`] (which
/// `cargo xtask setup --test-deps` installs), with their Debian packages:
/// dockerd writes its iptables rules in the engine's namespace.
const MORE_ENGINE_TOOLS: &[(&str, &str)] = &[("iptables", "iptables")];

/// Host paths that these engine versions create outside their own
/// directories; removed on drop when they did not exist before (and are
/// empty, for directories). Deepest first.
const STRAY_HOST_PATHS: &[&str] = &[
    "/etc/docker/key.json",
    "/run/docker/plugins",
    "/run/docker",
    "/run/containerd/s",
    "/run/containerd",
];

/// Why a real Docker engine cannot be run here, or `None` if it can.
/// Covers the programs (see `cargo xtask setup --test-deps`) and a
/// statically linked busybox for the test image.
pub fn docker_problem() -> Option<String> {
    let missing: Vec<String> = DOCKER_ENGINE_TOOLS
        .iter()
        .chain(MORE_ENGINE_TOOLS)
        .filter(|(tool, _)| find_program(tool).is_none())
        .map(|(tool, package)| format!("{tool} (Debian: {package})"))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "not found: {}; install them with `cargo xtask setup --test-deps` \
             (Debian's docker.io, never started by it, and busybox-static)",
            missing.join(", ")
        ));
    }
    let busybox = find_program("busybox")?;
    match is_static_elf(&busybox) {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "{} is dynamically linked; the FROM-scratch test image needs busybox-static",
            busybox.display()
        )),
        Err(e) => Some(format!("cannot read {}: {e:#}", busybox.display())),
    }
}

/// Like [`crate::skip_unless_privileged`] for the Docker engine: returns
/// `true` when [`docker_problem`] finds nothing, prints `SKIP` and returns
/// `false` otherwise, and panics under `CI=true` (where a skip is a failure).
pub fn skip_unless_docker(test_name: &str) -> bool {
    let Some(reason) = docker_problem() else {
        return true;
    };
    if in_ci() {
        panic!("{test_name}: cannot run the Docker end-to-end test under CI=true: {reason}");
    }
    eprintln!("SKIP {test_name}: {reason}");
    false
}

/// Runs `cmd` with stdout and stderr captured, killing it (SIGKILL) if it
/// has not exited after `timeout`. Fails only if it cannot be started or
/// timed out.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {desc}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{desc} did not finish within {timeout:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn describe(out: &Output) -> String {
    format!(
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// The major version in `dockerd --version` ("Docker version 20.10.24+dfsg1, build ...").
fn dockerd_major(dockerd: &Path) -> Result<u32> {
    let out = output_with_timeout(
        Command::new(dockerd).arg("--version"),
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_docker_major(&text)
        .with_context(|| format!("no version in `dockerd --version`: {text:?}"))
}

/// The first number after "version" in Docker's version line.
pub fn parse_docker_major(text: &str) -> Option<u32> {
    let after = text.split("version").nth(1)?.trim_start();
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
}

/// A Docker engine running in its own network namespace. See the module
/// docs. Everything it made is removed on drop, also after a panic.
#[derive(Debug)]
pub struct DockerHost {
    dir: PathBuf,
    cli: PathBuf,
    cgroup_parent: String,
    server_version: String,
    services_if: String,
    /// (path, existed before the daemons started)
    stray_paths: Vec<(PathBuf, bool)>,
    dockerd: Option<ChildGuard>,
    containerd: Option<ChildGuard>,
    cloud: Option<NetNs>,
    host: Option<NetNs>,
}

impl DockerHost {
    /// Builds the namespaces and the uplink, starts containerd and dockerd
    /// in the engine's namespace and waits until the engine answers.
    /// `prefix` (6 characters at most are used) starts every name.
    pub fn start(prefix: &str) -> Result<Self> {
        let base = crate::unique_name(prefix);
        let mut dir = std::env::temp_dir().join(&base);
        // Unix socket paths are limited to 107 bytes; the longest one is
        // containerd's ttrpc socket.
        if dir.as_os_str().len() > 60 {
            dir = PathBuf::from("/tmp").join(&base);
        }
        let cli = find_program("docker").context("docker CLI not found")?;
        let mut dh = DockerHost {
            cgroup_parent: format!("egress-e2e-{base}"),
            dir: dir.clone(),
            cli,
            server_version: String::new(),
            services_if: addrs::CLOUD_SERVICES_IF.to_owned(),
            stray_paths: STRAY_HOST_PATHS
                .iter()
                .map(|p| (PathBuf::from(p), Path::new(p).exists()))
                .collect(),
            dockerd: None,
            containerd: None,
            cloud: None,
            host: None,
        };
        // From here on, Drop undoes whatever exists.
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for sub in ["ctd", "cli", "data", "exec"] {
            std::fs::create_dir(dir.join(sub))?;
        }
        dh.host = Some(NetNs::create(&format!("{base}h"))?);
        dh.cloud = Some(NetNs::create(&format!("{base}k"))?);
        dh.wire_uplink()?;
        dh.start_containerd()?;
        dh.start_dockerd()?;
        Ok(dh)
    }

    /// The engine's network namespace ("dkhost"): docker0, br-*, Docker's
    /// iptables rules; `--network host` containers run in it.
    pub fn host(&self) -> &NetNs {
        self.host
            .as_ref()
            .expect("host netns exists while DockerHost lives")
    }

    /// The "cloud" namespace behind the uplink.
    pub fn cloud(&self) -> &NetNs {
        self.cloud
            .as_ref()
            .expect("cloud netns exists while DockerHost lives")
    }

    /// The temporary directory holding the daemons' state and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `unix:///.../docker.sock`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// The CLI configuration directory (for `DOCKER_CONFIG`), so that
    /// nothing is read from or written to `~/.docker`.
    pub fn docker_config(&self) -> PathBuf {
        self.dir.join("cli")
    }

    /// `docker version`'s server version, e.g. `20.10.24+dfsg1`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Major number of [`server_version`](Self::server_version).
    pub fn server_major(&self) -> u32 {
        self.server_version
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The cgroup parent of every container (`--cgroup-parent`).
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// A `docker` command talking to this engine only: `--host` and
    /// `--config` are explicit and the variables that could point the CLI
    /// elsewhere are removed. The legacy builder (`DOCKER_BUILDKIT=0`) needs
    /// no buildx plugin and works with every engine version.
    pub fn docker_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.cli);
        for var in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_CONFIG",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_BUILDKIT", "0")
            .arg("--config")
            .arg(self.docker_config())
            .arg("--host")
            .arg(self.docker_host());
        cmd
    }

    /// `docker ARGS...`, whatever the exit status (bounded by `timeout`).
    pub fn docker_output<S: AsRef<OsStr>>(&self, args: &[S], timeout: Duration) -> Result<Output> {
        let mut cmd = self.docker_cmd();
        cmd.args(args);
        output_with_timeout(&mut cmd, timeout)
    }

    /// `docker ARGS...`; fails unless it exits 0. Returns stdout, trimmed.
    pub fn docker<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = self.docker_output(args, DOCKER_CLI_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "`docker {}` failed ({})",
                crate::netns::display_argv(args),
                describe(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `docker run -d` of a sleeping busybox container named `name`, with
    /// these labels (`key` or `key=value`): its address on its network.
    pub fn run_sleeper(&self, name: &str, labels: &[&str]) -> Result<Ipv4Addr> {
        let mut args = vec!["run", "-d", "--name", name];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.extend([BUSYBOX_IMAGE, "sleep", "3600"]);
        self.docker(&args)
            .with_context(|| format!("starting {name}"))?;
        let ip = self.docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name,
        ])?;
        ip.parse()
            .with_context(|| format!("{name}'s address: {ip:?}"))
    }

    /// The network namespace of running container `name`.
    pub fn container_netns(&self, name: &str) -> Result<NetNs> {
        let pid = self.docker(&["inspect", "--format", "{{.State.Pid}}", name])?;
        let pid = pid
            .trim()
            .parse()
            .with_context(|| format!("{name}'s pid: {pid:?}"))?;
        NetNs::attach("dkc", pid)
    }

    /// `count` raw TCP SYNs written by container `from` on its eth0, to the
    /// bridge's MAC, for `dst:dport` and carrying the source address `src`
    /// (a forged one, to test identity): source ports `sport`, `sport + 1`...
    pub fn forge_syns(
        &self,
        from: &str,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        dport: u16,
        sport: u16,
        count: u16,
    ) -> Result<()> {
        use crate::frames::{V4, ethernet, tcp};
        use crate::wire::{Layout, mac, send_frames};
        let ns = self.container_netns(from)?;
        let bridge_mac = mac(self.host(), "docker0")?;
        let own_mac = mac(&ns, "eth0")?;
        let frames: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut ip = V4::new(dst, 6);
                ip.src = src;
                let mut p = ip.header(20);
                p.extend_from_slice(&tcp(sport + i, dport, 0x02));
                let mut f = ethernet(0x0800, &[], &p);
                f[0..6].copy_from_slice(&bridge_mac);
                f[6..12].copy_from_slice(&own_mac);
                f
            })
            .collect();
        send_frames(&ns, "eth0", &frames, Layout::Linear)
    }

    /// `iptables ARGS...` in the engine's namespace.
    pub fn iptables(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["iptables"];
        argv.extend_from_slice(args);
        self.host().exec_stdout(&argv)
    }

    /// The network namespace inode of process `pid`.
    pub fn netns_inode_of(pid: u32) -> Result<u64> {
        Ok(std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .with_context(|| format!("stat /proc/{pid}/ns/net"))?
            .ino())
    }

    /// The inode of the engine's namespace.
    pub fn host_netns_inode(&self) -> Result<u64> {
        Ok(std::fs::metadata(self.host().path())?.ino())
    }

    /// The last lines of the daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["dockerd.log", "containerd.log"] {
            let path = self.dir.join(name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            s.push_str(&format!(
                "---- last {} lines of {} ----\n{}\n",
                tail.len(),
                path.display(),
                tail.join("\n")
            ));
        }
        s
    }

    fn wire_uplink(&mut self) -> Result<()> {
        self.services_if = crate::topology::wire_cloud(self.host(), self.cloud())?;
        // Everything the engine's namespace sends off-link goes to the
        // cloud namespace, which does not forward: nothing leaves the test.
        self.host().ip(&[
            "route",
            "add",
            "default",
            "via",
            &addrs::UPLINK_CLOUD_V4.to_string(),
        ])?;
        self.host()
            .wait_link_up(addrs::UPLINK, Duration::from_secs(10))?;
        for a in addrs::CLOUD_V4 {
            self.add_cloud_address(a)?;
        }
        Ok(())
    }

    /// Gives the cloud namespace one more IPv4 address (reached from the
    /// engine's namespace through the default route).
    pub fn add_cloud_address(&self, addr: Ipv4Addr) -> Result<()> {
        self.cloud().ip(&[
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            &self.services_if,
        ])?;
        Ok(())
    }

    /// `PATH` for the daemons, with the sbin directories.
    fn daemon_path() -> std::ffi::OsString {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        for d in SBIN_DIRS {
            if !dirs.iter().any(|x| x == Path::new(d)) {
                dirs.push(PathBuf::from(d));
            }
        }
        std::env::join_paths(dirs).unwrap_or(path)
    }

    fn spawn_daemon(&self, program: &Path, args: &[&OsStr], log: &str) -> Result<ChildGuard> {
        let log_path = self.dir.join(log);
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = self.host().command(program);
        cmd.args(args)
            .env("PATH", Self::daemon_path())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        ChildGuard::spawn(
            cmd,
            format!("{} (netns {})", program.display(), self.host().name()),
        )
    }

    fn start_containerd(&mut self) -> Result<()> {
        let ctd = self.dir.join("ctd");
        let socket = ctd.join("containerd.sock");
        let config = ctd.join("config.toml");
        // The CRI plugin would look for CNI configuration on the machine;
        // the opt plugin would create /opt/containerd.
        std::fs::write(
            &config,
            format!(
                "version = 2\n\
                 root = \"{root}\"\n\
                 state = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n\
                 [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
                root = ctd.join("root").display(),
                state = ctd.join("state").display(),
                sock = socket.display(),
                opt = ctd.join("opt").display(),
            ),
        )?;
        let containerd = find_program("containerd").context("containerd not found")?;
        let child = self.spawn_daemon(
            &containerd,
            &[OsStr::new("--config"), config.as_os_str()],
            "containerd.log",
        )?;
        let pid = child.pid();
        self.containerd = Some(child);
        let ready = crate::wait_until(START_TIMEOUT, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
                || !self.containerd.as_mut().is_some_and(ChildGuard::is_running)
        });
        ensure!(
            ready && self.containerd.as_mut().is_some_and(ChildGuard::is_running),
            "containerd did not come up\n{}",
            self.logs()
        );
        // `--network host` containers get containerd's namespace; it must
        // be the engine's, never the machine's.
        let (theirs, ours) = (Self::netns_inode_of(pid)?, self.host_netns_inode()?);
        ensure!(
            theirs == ours,
            "containerd (pid {pid}) is not in netns {} ({theirs} != {ours})",
            self.host().name()
        );
        Ok(())
    }

    fn start_dockerd(&mut self) -> Result<()> {
        let dockerd = find_program("dockerd").context("dockerd not found")?;
        // dockerd < 23 writes its identity key to /etc/docker/key.json
        // unless told otherwise; later versions reject the unknown key.
        let daemon_json = if dockerd_major(&dockerd)? < 23 {
            format!(
                "{{\"deprecated-key-path\": \"{}\"}}\n",
                self.dir.join("key.json").display()
            )
        } else {
            "{}\n".to_owned()
        };
        let config = self.dir.join("daemon.json");
        std::fs::write(&config, daemon_json)?;
        let args: Vec<std::ffi::OsString> = vec![
            "--config-file".into(),
            config.into(),
            "--containerd".into(),
            self.dir.join("ctd/containerd.sock").into(),
            "--data-root".into(),
            self.dir.join("data").into(),
            "--exec-root".into(),
            self.dir.join("exec").into(),
            "--pidfile".into(),
            self.dir.join("docker.pid").into(),
            "-H".into(),
            self.docker_host().into(),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone().into(),
        ];
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        self.dockerd = Some(self.spawn_daemon(&dockerd, &args, "dockerd.log")?);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.dockerd.as_mut().is_some_and(ChildGuard::is_running) {
                bail!("dockerd exited during startup\n{}", self.logs());
            }
            let out = self.docker_output(
                &["version", "--format", "{{.Server.Version}}"],
                Duration::from_secs(10),
            );
            if let Ok(out) = out
                && out.status.success()
            {
                self.server_version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "dockerd did not answer within {START_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the engine the way a shutdown does: dockerd (which stops every
    /// container, keeping their restart policies), then containerd and any
    /// shim left; then deletes the bridges, which a reboot would not bring
    /// back (the engine creates them again when it starts). Containers are
    /// kept: [`start_engine`](Self::start_engine) restarts the ones whose
    /// policy says so, as after a boot.
    pub fn stop_engine(&mut self) -> Result<()> {
        Self::stop_daemon(&mut self.dockerd, "dockerd");
        Self::stop_daemon(&mut self.containerd, "containerd");
        for _ in 0..3 {
            let shims: Vec<i32> = self.leftover_pids();
            if shims.is_empty() {
                break;
            }
            for pid in shims {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let links = self
            .host()
            .exec_stdout(&["ip", "-o", "link", "show", "type", "bridge"])?;
        for name in crate::parse_link_names(&links) {
            self.host().ip(&["link", "del", &name])?;
        }
        Ok(())
    }

    /// Starts containerd and dockerd again after [`stop_engine`](Self::stop_engine).
    pub fn start_engine(&mut self) -> Result<()> {
        ensure!(self.dockerd.is_none(), "the engine is running");
        self.start_containerd()?;
        self.start_dockerd()
    }

    /// Every cgroup directory named after our cgroup parent, in every
    /// hierarchy (cgroup v1 controllers and the unified one).
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new("/sys/fs/cgroup");
        let mut out = Vec::new();
        let direct = root.join(&self.cgroup_parent);
        if direct.is_dir() {
            out.push(direct);
        }
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                let p = e.path().join(&self.cgroup_parent);
                if p.is_dir() {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Processes left in our cgroups and shims of our containerd (their
    /// command line names our directory): all started by this engine.
    fn leftover_pids(&self) -> Vec<i32> {
        fn walk(dir: &Path, out: &mut Vec<i32>) {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&e.path(), out);
                    }
                }
            }
        }
        let mut pids = Vec::new();
        for d in self.cgroup_dirs() {
            walk(&d, &mut pids);
        }
        // With the separator, so that /tmp/x1 never matches /tmp/x10.
        let mut needle = self.dir.as_os_str().as_encoded_bytes().to_vec();
        needle.push(b'/');
        let me = std::process::id() as i32;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                if let Ok(cmdline) = std::fs::read(e.path().join("cmdline"))
                    && cmdline
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
                {
                    pids.push(pid);
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Mount points at or below our directory, deepest first.
    fn mounts_below_dir(&self) -> Vec<PathBuf> {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return Vec::new();
        };
        let mut mounts: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(egress_loader::kernel::cgroup::unescape_octal)
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&self.dir))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        mounts.dedup();
        mounts
    }

    fn remove_all_containers(&self) {
        let Ok(ids) = self.docker(&["ps", "-aq"]) else {
            return;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        if let Err(e) = self.docker(&args) {
            eprintln!("warning: removing containers: {e:#}");
        }
    }

    fn stop_daemon(child: &mut Option<ChildGuard>, name: &str) {
        if let Some(mut c) = child.take() {
            match c.terminate(STOP_TIMEOUT) {
                Ok((_, true)) => {}
                Ok((_, false)) => eprintln!("warning: {name} ignored SIGTERM, killed"),
                Err(e) => eprintln!("warning: stopping {name}: {e:#}"),
            }
        }
    }

    fn cleanup(&mut self) {
        if self.dockerd.is_some() {
            self.remove_all_containers();
        }
        Self::stop_daemon(&mut self.dockerd, "dockerd");
        Self::stop_daemon(&mut self.containerd, "containerd");
        // Whatever survived (a container whose removal failed, its shim).
        for _ in 0..3 {
            let pids = self.leftover_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for _ in 0..3 {
            let mounts = self.mounts_below_dir();
            if mounts.is_empty() {
                break;
            }
            for m in mounts {
                if let Err(e) = nix::mount::umount2(&m, MntFlags::MNT_DETACH) {
                    eprintln!("warning: umount {}: {e}", m.display());
                }
            }
        }
        // Deleting the namespaces removes the uplink, docker0, every br-*
        // and veth, and Docker's iptables rules with them.
        self.cloud.take();
        self.host.take();
        for d in self.cgroup_dirs() {
            rmdir_tree(&d);
        }
        let mounts = self.mounts_below_dir();
        if mounts.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("warning: removing {}: {e}", self.dir.display());
            }
        } else {
            eprintln!(
                "warning: not removing {}: still mounted: {mounts:?}",
                self.dir.display()
            );
        }
        for (path, existed) in &self.stray_paths {
            if *existed || !path.exists() {
                continue;
            }
            let res = if path.is_dir() {
                std::fs::remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
            if let Err(e) = res
                && e.kind() != std::io::ErrorKind::DirectoryNotEmpty
            {
                eprintln!("warning: removing {}: {e}", path.display());
            }
        }
    }
}

/// Removes a cgroup directory and its (empty) children, deepest first.
/// cgroupfs directories are removed with rmdir even though they list files.
fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("warning: rmdir {}: {e}", dir.display());
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Docker engine in netns {} ({}) ----\n{}",
                self.host.as_ref().map(NetNs::name).unwrap_or("-"),
                self.dir.display(),
                self.logs()
            );
            if self.dockerd.is_some()
                && let Ok(ps) = self.docker(&["ps", "-a"])
            {
                eprintln!("---- docker ps -a ----\n{ps}");
            }
        }
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_versions() {
        assert_eq!(
            parse_docker_major("Docker version 20.10.24+dfsg1, build 297e128"),
            Some(20)
        );
        assert_eq!(
            parse_docker_major("Docker version 28.2.2, build e6534b4"),
            Some(28)
        );
        assert_eq!(parse_docker_major("nonsense"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            egress_loader::kernel::cgroup::unescape_octal(r"/tmp/a\040b"),
            "/tmp/a b"
        );
        assert_eq!(
            egress_loader::kernel::cgroup::unescape_octal("/tmp/plain"),
            "/tmp/plain"
        );
        assert_eq!(
            egress_loader::kernel::cgroup::unescape_octal(r"/tmp/x\04"),
            r"/tmp/x\04"
        );
    }
}
