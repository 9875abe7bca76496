//! What ships besides the binary: the systemd unit (it verifies, orders the
//! filter before the container engines, and its capability bounding set is
//! all the loader needs; READY=1 means in force), the Debian package (its
//! contents, lintian, the packaged binary checking the packaged config) and
//! the Kubernetes manifests (kustomize builds them, and every object
//! validates against the Kubernetes schemas offline).

use std::{
    collections::BTreeMap,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::common::*;
use aya::programs::{SchedClassifier, TcAttachType};
use egress_tests::{BpffsMount, ChildGuard, NetNs, addrs, loader_bin, topology::Topology};
use egress_tests::{report, require_privileges, test_name};

const UNIT: &str = "deploy/systemd/egress-filter.service";
const UNIT_NAME: &str = "egress-filter.service";
/// The engines the unit must come before (and be wanted by).
const ENGINES: [&str; 3] = ["docker.service", "containerd.service", "kubelet.service"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `program` from PATH (or the sbin directories); `None` after printing
/// SKIP, and a panic under CI=true, where a skip is a failure.
fn require(test: &str, program: &str, hint: &str) -> Option<PathBuf> {
    let found = egress_devtools::machine::find_program(program);
    if found.is_none() {
        let reason = format!("{program} not found ({hint})");
        assert!(!in_ci(), "{test}: cannot run under CI=true: {reason}");
        eprintln!("SKIP {test}: {reason}");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The unit's `Key=value` lines, by key (repeated keys joined by spaces).
fn unit_keys(unit: &str) -> BTreeMap<String, String> {
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let e = keys.entry(k.to_owned()).or_default();
            if !e.is_empty() {
                e.push(' ');
            }
            e.push_str(v);
        }
    }
    keys
}

/// A root directory for `systemd-analyze verify --root`: the machine's
/// own unit files (so sysinit.target and friends resolve), nothing else.
fn systemd_root(tag: &str) -> TempDir {
    let root = TempDir::new(tag);
    std::fs::create_dir_all(root.join("lib/systemd")).unwrap();
    let out = run(Command::new("cp")
        .arg("-a")
        .arg("/lib/systemd/system")
        .arg(root.join("lib/systemd/")));
    assert!(
        out.status.success(),
        "copying unit files: {}",
        text(&out.stderr)
    );
    root
}

/// `systemd-analyze verify --root ROOT UNIT`: must succeed and say nothing
/// (an unknown key is only a warning on stderr).
fn verify(analyze: &Path, root: &Path, unit: &str, manpath: Option<&Path>) {
    let mut cmd = Command::new(analyze);
    cmd.arg("verify").arg(format!("--root={}", root.display()));
    match manpath {
        Some(m) => {
            cmd.arg("--man=yes").env("MANPATH", m);
        }
        None => {
            cmd.arg("--man=no");
        }
    }
    cmd.arg(unit);
    let out = run(&mut cmd);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify {unit} in {}: {}\n{}",
        root.display(),
        out.status,
        text(&out.stderr)
    );
}

#[test]
fn the_unit_verifies_and_orders_the_filter_before_the_engines() {
    let test = test_name!();
    let Some(analyze) = require(test, "systemd-analyze", "Debian: systemd") else {
        return;
    };
    let unit = std::fs::read_to_string(workspace_root().join(UNIT)).unwrap();
    let keys = unit_keys(&unit);
    let has_all = |key: &str, want: &[&str]| {
        let got: Vec<&str> = keys
            .get(key)
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default();
        for w in want {
            assert!(got.contains(w), "{key}= lacks {w}: {got:?}");
        }
    };
    has_all("Before", &ENGINES);
    has_all("WantedBy", &ENGINES);
    has_all("WantedBy", &["multi-user.target"]);
    for (key, value) in [
        ("Type", "notify"),
        ("Restart", "always"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("RuntimeDirectory", "egress-filter"),
        ("ExecReload", "/usr/bin/egress-loader reload"),
    ] {
        assert_eq!(keys.get(key).map(String::as_str), Some(value), "{key}");
    }
    has_all("ReadWritePaths", &["/sys/fs/bpf"]);
    assert!(
        !keys.contains_key("Requires"),
        "an engine must still start when the filter cannot"
    );

    // The packaged unit, with its binary where ExecStart= says.
    let root = systemd_root("unitroot");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::copy(loader_bin().unwrap(), root.join("usr/bin/egress-loader")).unwrap();
    std::fs::write(root.join("lib/systemd/system").join(UNIT_NAME), &unit).unwrap();
    verify(
        &analyze,
        &root,
        &format!("/lib/systemd/system/{UNIT_NAME}"),
        None,
    );
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(UNIT_NAME));
    let overall = text(&out.stdout)
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "no exposure level: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
    report!(
        "systemd-analyze security --offline=true: {}",
        overall.trim()
    );
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{overall}"));
    assert!(
        score < 4.0,
        "the sandbox is weaker than it should be: {overall}"
    );

    // What `install-unit` writes from the image: the same unit, pointing at
    // /usr/local/bin, where it put the binary.
    let host = systemd_root("installroot");
    std::fs::create_dir_all(host.join("etc/systemd")).unwrap();
    let out = run(Command::new(loader_bin().unwrap())
        .args(["install-unit", "--root"])
        .arg(&*host));
    assert!(out.status.success(), "install-unit: {}", text(&out.stderr));
    report!(
        "$ egress-loader install-unit --root {}\n{}",
        host.display(),
        text(&out.stdout)
    );
    let installed =
        std::fs::read_to_string(host.join("etc/systemd/system").join(UNIT_NAME)).unwrap();
    let printed = run(Command::new(loader_bin().unwrap()).args(["install-unit", "--print"]));
    assert_eq!(text(&printed.stdout), installed);
    assert!(installed.contains("ExecStart=/usr/local/bin/egress-loader run"));
    assert!(!installed.contains("/usr/bin/egress-loader"), "{installed}");
    let local = host.join("usr/local/bin/egress-loader");
    assert_eq!(
        std::fs::read(&local).unwrap(),
        std::fs::read(loader_bin().unwrap()).unwrap(),
        "install-unit must copy its own binary"
    );
    verify(
        &analyze,
        &host,
        &format!("/etc/systemd/system/{UNIT_NAME}"),
        None,
    );
    let check = run(Command::new(&local)
        .arg("check-config")
        .arg(host.join("etc/egress-filter/config.toml")));
    assert!(check.status.success(), "{}", text(&check.stderr));
    // A config that exists is kept.
    std::fs::write(
        host.join("etc/egress-filter/config.toml"),
        "dry_run = true\n",
    )
    .unwrap();
    let again = run(Command::new(loader_bin().unwrap())
        .args(["install-unit", "--root"])
        .arg(&*host));
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_to_string(host.join("etc/egress-filter/config.toml")).unwrap(),
        "dry_run = true\n"
    );
    // Not a systemd root: refused, nothing written.
    let empty = TempDir::new("noroot");
    let refused = run(Command::new(loader_bin().unwrap())
        .args(["install-unit", "--root"])
        .arg(&*empty));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--root"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(std::fs::read_dir(&*empty).unwrap().count(), 0);
}

/// `setpriv` arguments giving exactly the unit's capability bounding set.
fn bounding_set_args(caps: &[String]) -> Vec<String> {
    let list: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    vec![
        "--bounding-set".into(),
        format!("-all,{}", list.join(",")),
        "--inh-caps".into(),
        "-all".into(),
        "--no-new-privs".into(),
    ]
}

fn tcx_programs(ns: &NetNs, iface: &str) -> usize {
    let name = iface.to_owned();
    ns.run_in(move || SchedClassifier::query_tcx(&name, TcAttachType::Ingress))
        .expect("setns")
        .map(|(_, p)| p.len())
        .unwrap_or(0)
}

/// The loader with the unit's capabilities, NoNewPrivileges and a
/// NOTIFY_SOCKET of the test's: READY=1 must come only once docker0 runs
/// the filter.
#[test]
fn the_units_capabilities_are_enough_and_ready_means_in_force() {
    require_privileges!();
    let test = test_name!();
    let Some(setpriv) = require(test, "setpriv", "Debian: util-linux") else {
        return;
    };
    let unit = std::fs::read_to_string(workspace_root().join(UNIT)).unwrap();
    let caps: Vec<String> = unit_keys(&unit)["CapabilityBoundingSet"]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(caps.contains(&"CAP_NET_ADMIN".to_owned()), "{caps:?}");
    let topo = Topology::docker_like("unitcap").unwrap_or_else(|e| panic!("{e:#}"));
    let _imds = egress_tests::traffic::tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let bpffs = BpffsMount::new();
    let dir = TempDir::new("unitcap");
    let pins = pin_dir(&bpffs);
    let spawn = |caps: &[String], notify: Option<&Path>| {
        let mut cmd = topo.host().command(&setpriv);
        cmd.args(bounding_set_args(caps))
            .arg("--")
            .arg(loader_bin().unwrap())
            .arg("run")
            .arg("--pin-dir")
            .arg(&pins)
            .args([
                "--rescan",
                RESCAN,
                "--events-socket",
                "none",
                "--state-file",
                "none",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match notify {
            Some(p) => cmd.env("NOTIFY_SOCKET", p),
            None => cmd.env_remove("NOTIFY_SOCKET"),
        };
        cmd
    };

    // One capability fewer: refused as a host that cannot run the filter.
    let fewer: Vec<String> = caps
        .iter()
        .filter(|c| *c != "CAP_NET_ADMIN")
        .cloned()
        .collect();
    let out = run(&mut spawn(&fewer, None));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("CAP_NET_ADMIN"),
        "{}",
        text(&out.stderr)
    );
    assert!(!pins.exists(), "a refused start changed something");

    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut loader = ChildGuard::spawn(
        spawn(&caps, Some(&socket_path)),
        "egress-loader run (unit caps)",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut buf = [0u8; 4096];
    let (message, attached_at_ready) = loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                // Checked at once, in this process: microseconds after READY=1.
                let attached = tcx_programs(topo.host(), "docker0");
                let m = text(&buf[..n]);
                if m.lines().any(|l| l == "READY=1") {
                    break (m, attached);
                }
            }
            Err(_) => {
                assert!(
                    loader.is_running() && started.elapsed() < READY_TIMEOUT,
                    "no READY=1 from the loader after {:?}",
                    started.elapsed()
                );
            }
        }
    };
    report!(
        "READY=1 after {} ms with the unit's bounding set {caps:?}: {:?}",
        started.elapsed().as_millis(),
        message.replace('\n', " ")
    );
    assert_eq!(
        attached_at_ready, 1,
        "READY=1 before docker0 ran the filter"
    );
    assert!(
        message.contains("STATUS=in force on 1 interface(s)"),
        "{message}"
    );
    assert_http_refused(topo.container(0).ns(), addrs::IMDS_V4, 80);
    let (status, _) = loader.terminate(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{status}");
    assert!(
        socket
            .recv(&mut buf)
            .map(|n| text(&buf[..n]))
            .unwrap_or_default()
            .contains("STOPPING=1"),
        "no STOPPING=1 on exit"
    );
    drop(loader);
}

#[test]
fn the_package_installs_what_a_docker_host_needs() {
    let test = test_name!();
    let Some(deb) = std::env::var_os("EGRESS_DEB").map(PathBuf::from) else {
        assert!(
            !in_ci(),
            "{test}: EGRESS_DEB is not set (cargo xtask test builds the package)"
        );
        eprintln!("SKIP {test}: EGRESS_DEB not set; run `cargo xtask test`");
        return;
    };
    let (Some(dpkg_deb), Some(lintian), Some(analyze)) = (
        require(test, "dpkg-deb", "Debian: dpkg"),
        require(test, "lintian", "Debian: lintian"),
        require(test, "systemd-analyze", "Debian: systemd"),
    ) else {
        return;
    };
    let field = |name: &str| {
        let out = run(Command::new(&dpkg_deb).arg("-f").arg(&deb).arg(name));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), "egress-filter");
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    let listing = text(&run(Command::new(&dpkg_deb).arg("-c").arg(&deb)).stdout);
    let mut files: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    files.sort();
    report!(
        "{}: {} files:\n  {}",
        deb.display(),
        files.len(),
        files.join("\n  ")
    );
    for want in [
        "/usr/bin/egress-loader",
        "/lib/systemd/system/egress-filter.service",
        "/etc/egress-filter/config.toml",
        "/usr/share/man/man1/egress-loader.1.gz",
        "/usr/share/man/man1/egress-loader-run.1.gz",
        "/usr/share/bash-completion/completions/egress-loader",
        "/usr/share/zsh/vendor-completions/_egress-loader",
        "/usr/share/fish/vendor_completions.d/egress-loader.fish",
        "/usr/share/doc/egress-filter/copyright",
        "/usr/share/doc/egress-filter/changelog.gz",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} not in the package");
    }
    let control = TempDir::new("debctl");
    let out = run(Command::new(&dpkg_deb).arg("-e").arg(&deb).arg(&*control));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/egress-filter/config.toml\n"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper enable 'egress-filter.service'"));

    let root = systemd_root("debroot");
    let out = run(Command::new(&dpkg_deb).arg("-x").arg(&deb).arg(&*root));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bin = root.join("usr/bin/egress-loader");
    let out = run(Command::new(&bin)
        .arg("check-config")
        .arg(root.join("etc/egress-filter/config.toml")));
    assert!(
        out.status.success(),
        "packaged check-config: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(": valid"),
        "{}",
        text(&out.stdout)
    );
    // As shipped, the packaged config is exactly the defaults.
    let defaults = run(Command::new(&bin).args(["check-config", "--defaults"]));
    let tmp = TempDir::new("debdefaults");
    std::fs::write(tmp.join("d.toml"), &defaults.stdout).unwrap();
    let of_defaults = run(Command::new(&bin)
        .arg("check-config")
        .arg(tmp.join("d.toml")));
    let policy = |o: &Output| {
        text(&o.stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(policy(&out), policy(&of_defaults));
    // The packaged unit verifies with the packaged binary, and the man
    // pages it names in Documentation= exist in the package.
    verify(
        &analyze,
        &root,
        &format!("/lib/systemd/system/{UNIT_NAME}"),
        Some(&root.join("usr/share/man")),
    );
    if let Some(bash) = egress_devtools::machine::on_path("bash") {
        let out = run(Command::new(bash)
            .arg("-n")
            .arg(root.join("usr/share/bash-completion/completions/egress-loader")));
        assert!(
            out.status.success(),
            "bash completion: {}",
            text(&out.stderr)
        );
    }
    let started = Instant::now();
    let out = run(Command::new(&lintian)
        .args(["--fail-on", "error"])
        .arg(&deb));
    report!(
        "lintian ({:.1} s): {}\n{}",
        started.elapsed().as_secs_f64(),
        out.status,
        text(&out.stdout)
    );
    assert!(
        out.status.success(),
        "lintian found errors:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).lines().any(|l| l.starts_with("E:")));
}

#[test]
fn the_kubernetes_manifests_build_and_validate() {
    let test = test_name!();
    let Some(kubectl) = require(test, "kubectl", "Debian: kubernetes-client") else {
        return;
    };
    let validate = std::env::var_os("EGRESS_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| egress_devtools::machine::on_path("kubernetes-validate"));
    let Some(validate) = validate else {
        assert!(
            !in_ci(),
            "{test}: kubernetes-validate not found (cargo xtask setup --test-deps)"
        );
        eprintln!("SKIP {test}: kubernetes-validate not found (cargo xtask setup --test-deps)");
        return;
    };
    let out = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(workspace_root().join("deploy/kubernetes")));
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        text(&out.stderr)
    );
    let manifests = text(&out.stdout);
    let dir = TempDir::new("k8s");
    let file = dir.join("egress-filter.yaml");
    std::fs::write(&file, &manifests).unwrap();
    let out = run(Command::new(&validate).arg("--strict").arg(&file));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    report!("kubernetes-validate --strict:\n{said}");
    assert!(out.status.success(), "{said}");
    for object in ["daemonset/egress-filter", "configmap/egress-filter"] {
        assert!(
            said.lines()
                .any(|l| l.contains("passed") && l.contains(object)),
            "{object} not validated: {said}"
        );
    }
    // The pod reads the file the ConfigMap is mounted as.
    assert!(
        manifests.contains("/etc/egress-filter/config.toml")
            && manifests.contains("mountPath: /etc/egress-filter"),
        "{manifests}"
    );
}
