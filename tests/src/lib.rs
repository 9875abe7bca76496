//! Test harness for the egress filter: network namespaces that look like a
//! Docker host, real sockets, a private bpffs mount and the loader process.
//!
//! Everything here follows docs/design.md, "Test topology without touching the
//! host": every object a test creates lives in a network namespace that the
//! test made (or in a bpffs mount under a temp dir), carries a unique name so
//! tests can run in parallel, and is torn down in a `Drop` impl so it also
//! goes away when the test panics. Nothing here adds routes, addresses,
//! qdiscs or firewall rules to the machine's root network namespace, and
//! traffic helpers only ever talk to addresses the topology created.
//!
//! Typical use:
//!
//! ```no_run
//! use egress_tests::{require_privileges, topology::Topology, traffic, addrs};
//! use std::time::Duration;
//!
//! # fn my_test() {
//! require_privileges!();
//! let topo = Topology::docker_like("mytest").unwrap();
//! let _srv = traffic::tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
//! let body = traffic::http_get(topo.container(0).ns(), addrs::SMTP_V4, 8080, "/", Duration::from_secs(3)).unwrap();
//! assert!(body.contains("ok"));
//! # }
//! ```

pub mod addrs;
pub mod bpffs;
pub mod cgroups;
pub mod corpus;
pub mod docker;
pub mod frames;
pub mod host;
pub mod loader;
pub mod netns;
pub mod reference;
pub mod test_run;
pub mod topology;
pub mod traffic;
pub mod wire;
pub mod workers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use bpffs::BpffsMount;
pub use loader::{EventsSocket, LoaderProcess, loader_bin, loader_cli};
pub use netns::{ChildGuard, NetNs};
pub use topology::{Bridge, Container, Topology};
pub use traffic::{ServerGuard, UdpSinkGuard};
pub use workers::Workers;

/// Maximum length of a Linux interface name (IFNAMSIZ - 1).
pub const IFNAMSIZ_MAX: usize = 15;

static NAME_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short suffix that is unique among concurrently running tests on this
/// machine: pid and a per-process counter, plus a few bits of clock so a
/// name left behind by a crashed run with a recycled pid does not collide.
/// At most 10 characters, `[0-9a-z]` only.
pub fn unique_suffix() -> String {
    let pid = std::process::id();
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut s = String::new();
    s.push_str(&base36(u64::from(pid)));
    s.push_str(&base36(u64::from(n)));
    // Two clock characters (36^2 = 1296 values).
    let r = base36(u64::from((nanos >> 10) % 1296));
    s.push_str(&format!("{r:0>2}"));
    s.truncate(10);
    s
}

/// `prefix` (cut to 6 characters, non-alphanumerics replaced by `x`) + unique
/// suffix. At most 16 characters; callers append at most a few characters
/// for a namespace role (`h`, `c0`, `k`, ...).
pub fn unique_name(prefix: &str) -> String {
    let mut p: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { 'x' })
        .take(6)
        .collect();
    if p.is_empty() {
        p.push('t');
    }
    format!("{p}{}", unique_suffix())
}

fn base36(mut v: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if v == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while v > 0 {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Fails unless `name` is a valid interface name (1..=15 bytes, no `/`,
/// whitespace or `:`).
pub fn check_ifname(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= IFNAMSIZ_MAX
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace()),
        "invalid interface name {name:?} (1..={IFNAMSIZ_MAX} bytes, no '/', ':' or whitespace)"
    );
    Ok(())
}

/// The test function this is written in, as libtest names it: the module
/// path below the test crate, then the function
/// (`lifecycle::status_check_reports_health_for_liveness_probes`), also
/// from inside a closure of that function.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::test_name_of(::std::any::type_name_of_val(&here))
    }};
}

/// What [`test_name!`] makes of the type name of a function item declared
/// in the test (`integration::lifecycle::reload::{{closure}}::here`).
#[doc(hidden)]
pub fn test_name_of(type_name: &'static str) -> &'static str {
    let mut name = type_name.strip_suffix("::here").unwrap_or(type_name);
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    name.split_once("::").map_or(name, |(_crate, path)| path)
}

/// Returns from the test, after `SKIP <test>: <reason>`, unless it can build
/// network namespaces here ([`skip_unless_privileged`], which fails the test
/// instead under `CI=true`); `require_privileges!(docker)` also needs a Docker
/// engine ([`docker::skip_unless_docker`], likewise). The test's name is its
/// own ([`test_name!`]). Then waits until no test of another suite runs
/// ([`enter_suite`]) and stays in its suite until the test ends.
///
/// ```no_run
/// # use egress_tests::require_privileges;
/// #[test]
/// fn blocks_imds() {
///     require_privileges!();
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! require_privileges {
    () => {
        let test = $crate::test_name!();
        if !$crate::skip_unless_privileged(test) {
            return;
        }
        let _suite = $crate::enter_suite(test);
    };
    (docker) => {
        let test = $crate::test_name!();
        if !$crate::skip_unless_privileged(test) || !$crate::docker::skip_unless_docker(test) {
            return;
        }
        let _suite = $crate::enter_suite(test);
    };
}

/// Writes a line straight to the test's stderr, past the harness's output
/// capture: tables and timings belong in CI logs even when the test passes.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut e = ::std::io::stderr().lock();
        let _ = writeln!(e, $($arg)*);
    }};
}

/// The suite whose privileged tests are running, and how many of them.
struct Running {
    suite: &'static str,
    tests: usize,
}

static RUNNING: Mutex<Running> = Mutex::new(Running {
    suite: "",
    tests: 0,
});
static SUITE_DONE: Condvar = Condvar::new();

/// Held while a privileged test runs: see [`enter_suite`].
pub struct SuiteGuard;

/// Waits until no test of another suite than `test`'s (`suite::name`) holds a
/// guard, then holds one for it. The suites share one process and once were
/// one binary each, run one after the other: their privileged tests still
/// run alongside tests of their own suite only (engines, loaders and timing
/// bounds were measured that way). libtest starts tests in name order, so a
/// suite's tests come together and a test waits at most for the end of the
/// suite before it.
pub fn enter_suite(test: &'static str) -> SuiteGuard {
    let suite = test.split_once("::").map_or(test, |(suite, _)| suite);
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    while running.tests > 0 && running.suite != suite {
        running = SUITE_DONE.wait(running).unwrap_or_else(|e| e.into_inner());
    }
    running.suite = suite;
    running.tests += 1;
    SuiteGuard
}

impl Drop for SuiteGuard {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        running.tests -= 1;
        if running.tests == 0 {
            SUITE_DONE.notify_all();
        }
    }
}

/// A temporary directory, removed on drop (also after a panic).
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/egress-<tag>-<unique>`, created.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("egress-{tag}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether this test can build network namespaces here. Returns `true` when
/// it can. Otherwise prints `SKIP <test>: <reason>` and returns `false` —
/// unless the environment has `CI=true`, where a skipped privileged test is a
/// failure and this panics instead.
///
/// Tests call it through [`require_privileges!`], which names the test.
pub fn skip_unless_privileged(test_name: &str) -> bool {
    match privilege_problem() {
        None => true,
        Some(reason) => {
            if egress_devtools::machine::in_ci() {
                panic!("{test_name}: cannot run privileged test under CI=true: {reason}");
            }
            eprintln!("SKIP {test_name}: {reason}");
            false
        }
    }
}

fn privilege_problem() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces, bpffs, eBPF)".into());
    }
    for tool in ["ip", "nsenter", "sysctl"] {
        if egress_devtools::machine::on_path(tool).is_none() {
            return Some(format!("`{tool}` not found in PATH"));
        }
    }
    // Prove that a namespace can really be created (containers without
    // CAP_SYS_ADMIN, read-only /var/run, ...).
    let probe = format!("egprobe{}", unique_suffix());
    let _guard = netns::NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            None
        }
        Ok(out) => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `ip netns add`: {e}")),
    }
}

/// Polls `cond` every 20 ms until it returns true or `timeout` passes.
/// Returns whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names of the interfaces in the *current* (normally the root) network
/// namespace, from `ip -o link`. Read-only; used to check that tests leave
/// nothing behind.
pub fn root_interface_names() -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output()?;
    anyhow::ensure!(out.status.success(), "ip -o link show failed");
    Ok(parse_link_names(&String::from_utf8_lossy(&out.stdout)))
}

/// Names of the network namespaces known to `ip netns list`.
pub fn netns_names() -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    anyhow::ensure!(out.status.success(), "ip netns list failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Parses interface names out of `ip -o link` output ("3: veth0@if2: <...").
pub fn parse_link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            parts.next()?;
            let name = parts.next()?.trim();
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_knows_its_name() {
        assert_eq!(test_name!(), "tests::a_test_knows_its_name");
        let inner = || test_name!();
        assert_eq!(inner(), "tests::a_test_knows_its_name");
        assert_eq!(
            test_name_of("integration::lifecycle::reload::{{closure}}::here"),
            "lifecycle::reload"
        );
    }

    #[test]
    fn names_are_short_and_unique() {
        let a = unique_name("averyverylongprefix");
        let b = unique_name("averyverylongprefix");
        assert_ne!(a, b);
        assert!(a.len() <= 16, "{a}");
        assert!(a.starts_with("averyv"));
        assert!(unique_name("-").starts_with('x'));
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("docker0").is_ok());
        assert!(check_ifname("br-0123456789ab").is_ok());
        assert!(check_ifname("br-0123456789abc").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a b").is_err());
    }

    #[test]
    fn parses_ip_link() {
        let text = "1: lo: <LOOPBACK,UP> mtu 65536\n5: veth1@if4: <BROADCAST> mtu 1500\n";
        assert_eq!(parse_link_names(text), vec!["lo", "veth1"]);
    }
}
