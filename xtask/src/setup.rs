//! `cargo xtask setup`: install the eBPF toolchain (and optionally the tools
//! the tests use), skipping every step that is already satisfied.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::util::{self, command};

/// The LLVM major version of rustc nightly; bpf-linker must be built against it.
const LLVM_MAJOR: u32 = 22;

/// Debian packages needed to build bpf-linker against LLVM 22.
const TOOLCHAIN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Programs the tests run, with the Debian package providing each.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("bpftool", "bpftool"),
    ("nsenter", "util-linux"),
    ("iptables", "iptables"),
    // The deployment tests (tests/tests/integration/deploy.rs): the unit, the package,
    // the Kubernetes manifests.
    ("systemd-analyze", "systemd"),
    ("setpriv", "util-linux"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("strip", "binutils"),
    ("lintian", "lintian"),
    ("kubectl", "kubernetes-client"),
];

/// From PyPI: offline validation of the Kubernetes manifests against the
/// API's schemas, which it ships (tests/tests/integration/deploy.rs). Installed into a
/// virtual environment of its own under the target directory.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// From PyPI, into the same virtual environment: the AWS SDK core whose
/// instance-metadata credential fetcher tests/tests/integration/reject_netns.rs runs as
/// a real client against a rejected metadata address.
const BOTOCORE: &str = "botocore==1.44.8";

/// The `kubernetes-validate` program that `setup --test-deps` installs.
pub fn kubernetes_validate() -> PathBuf {
    util::target_dir().join("test-tools/python/bin/kubernetes-validate")
}

/// The Docker engine that the end-to-end tests start inside a network
/// namespace; the list is shared with the tests' own check.
const DOCKER_TOOLS: &[(&str, &str)] = egress_devtools::machine::DOCKER_ENGINE_TOOLS;

/// cargo-fuzz, for the bounded fuzz run of the parser (fuzz/) in `cargo
/// xtask test`; pinned: this version builds with the stable rustc here.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Debian's hook that `invoke-rc.d` (and `deb-systemd-invoke`) asks before
/// starting a service from a package's postinst; exit status 101 = "don't".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Install the eBPF toolchain: nightly with rust-src, LLVM 22 and bpf-linker.
///
/// Checks, in order: the nightly toolchain and its rust-src component
/// (rustup), the Debian packages llvm-22-dev libpolly-22-dev libzstd-dev
/// zlib1g-dev (dpkg-query; apt-get as root), and bpf-linker (on PATH or in
/// ~/.cargo/bin; built with `cargo install` against LLVM 22). Anything
/// already present is skipped, so running it again installs nothing.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask setup              # toolchain only\n  \
    cargo xtask setup --test-deps  # also the test tools and Docker's engine")]
pub struct Options {
    /// Also install the tools the tests need: ip, ping, bpftool, nsenter,
    /// iptables; systemd-analyze, setpriv, dpkg-deb, dpkg-shlibdeps, strip,
    /// lintian, kubectl and (PyPI) kubernetes-validate for the deployment
    /// tests; cargo-fuzz (for the parser's fuzz run); and for the end-to-end
    /// test Docker's engine (Debian's docker.io, installed without starting
    /// it; the test runs its own daemon in a network namespace) and
    /// busybox-static.
    #[arg(long)]
    test_deps: bool,
}

pub fn main(opts: &Options) -> Result<()> {
    let mut setup = Setup::default();
    setup.toolchain()?;
    if opts.test_deps {
        setup.test_tools()?;
        setup.docker_engine()?;
    }
    setup.summary();
    Ok(())
}

/// Runs setup for the other subcommands: the toolchain, plus the test tools
/// when `test_deps` is set.
pub fn ensure(test_deps: bool) -> Result<()> {
    main(&Options { test_deps })
}

/// For other subcommands' own tools (bench): each (tool, Debian package)
/// found on PATH or installed, and `packages` installed.
pub fn ensure_tools(heading: &str, tools: &[(&str, &str)], packages: &[&str]) -> Result<()> {
    println!("== setup: {heading}");
    let mut setup = Setup::default();
    setup.tools(tools, false)?;
    if !packages.is_empty() {
        setup.ensure_apt(packages)?;
    }
    setup.summary();
    Ok(())
}

#[derive(Default)]
struct Setup {
    installed: Vec<String>,
    apt_updated: bool,
}

impl Setup {
    fn toolchain(&mut self) -> Result<()> {
        println!("== setup: eBPF toolchain");
        self.nightly()?;
        self.ensure_apt(TOOLCHAIN_PACKAGES)?;
        self.bpf_linker()
    }

    fn summary(&self) {
        if self.installed.is_empty() {
            println!("== setup: everything already present, nothing installed");
        } else {
            println!("== setup: installed {}", self.installed.join(", "));
        }
    }

    /// The nightly toolchain with rust-src (aya-build uses `-Z build-std`).
    fn nightly(&mut self) -> Result<()> {
        let mut cmd = command("rustup");
        cmd.args(["toolchain", "list"]);
        let toolchains = stdout_of(&mut cmd)?
            .context("rustup not found on PATH: install it from https://rustup.rs")?;
        let has_nightly = toolchains
            .lines()
            .any(|line| line == "nightly" || line.starts_with("nightly-"));
        if has_nightly {
            println!("   ok: nightly toolchain installed");
        } else {
            println!("   missing: nightly toolchain, installing");
            util::run(command("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))?;
            self.installed.push("nightly toolchain".into());
        }

        let mut cmd = command("rustup");
        cmd.args(["component", "list", "--toolchain", "nightly", "--installed"]);
        let components = stdout_of(&mut cmd)?.context("rustup not found on PATH")?;
        let has_rust_src = components
            .lines()
            .any(|line| line == "rust-src" || line.starts_with("rust-src-"));
        if has_rust_src {
            println!("   ok: rust-src installed for nightly");
        } else {
            println!("   missing: rust-src for nightly, installing");
            util::run(command("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
            self.installed.push("rust-src (nightly)".into());
        }

        // bpf-linker must use the same LLVM as rustc nightly; warn on drift.
        let mut cmd = command("rustup");
        cmd.args(["run", "nightly", "rustc", "-vV"]);
        let llvm = stdout_of(&mut cmd)?.and_then(|out| {
            out.lines()
                .find_map(|line| line.strip_prefix("LLVM version: "))
                .map(str::to_owned)
        });
        match llvm {
            Some(version) if version.split('.').next() == Some(&LLVM_MAJOR.to_string()) => {
                println!("   ok: nightly uses LLVM {version}");
            }
            Some(version) => println!(
                "   warning: nightly uses LLVM {version}, but this setup installs LLVM {LLVM_MAJOR} \
                 for bpf-linker; update LLVM_MAJOR and the package list in xtask/src/setup.rs"
            ),
            None => println!("   warning: could not read nightly rustc's LLVM version"),
        }
        Ok(())
    }

    /// bpf-linker, built against LLVM 22 if it is missing or does not run.
    fn bpf_linker(&mut self) -> Result<()> {
        if let Some((path, version)) = find_bpf_linker()? {
            println!("   ok: {version} ({})", path.display());
            if which::which("bpf-linker").is_err() {
                println!(
                    "   note: {} is not on PATH; xtask adds it for the commands it runs",
                    path.parent()
                        .map_or_else(String::new, |dir| dir.display().to_string())
                );
            }
            return Ok(());
        }
        println!("   missing: bpf-linker, building it against LLVM {LLVM_MAJOR} (about a minute)");
        let mut cmd = util::cargo();
        cmd.env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{LLVM_MAJOR}"));
        util::run(&mut cmd)?;
        let (path, version) = find_bpf_linker()?
            .context("bpf-linker was installed but `bpf-linker --version` still fails")?;
        println!("   ok: {version} ({})", path.display());
        self.installed.push("bpf-linker".into());
        Ok(())
    }

    /// The test tools; their packages are installed when a tool is missing.
    fn test_tools(&mut self) -> Result<()> {
        println!("== setup: test tools");
        self.tools(TEST_TOOLS, false)?;
        self.python_tool()?;
        self.cargo_fuzz()
    }

    /// kubernetes-validate in its own virtual environment (python3 -m venv).
    fn python_tool(&mut self) -> Result<()> {
        let program = kubernetes_validate();
        let mut check = command(&program);
        check.arg("--version");
        if let Some(out) = util::probe(&mut check)?
            && out.status.success()
        {
            println!("   ok: kubernetes-validate ({})", program.display());
            return self.botocore();
        }
        println!("   missing: {KUBERNETES_VALIDATE} (PyPI), installing into a virtual environment");
        let venv = program
            .parent()
            .and_then(|bin| bin.parent())
            .context("venv path")?
            .to_path_buf();
        if util::find_program("python3").is_none() {
            self.ensure_apt(&["python3", "python3-venv"])?;
        }
        util::run(command("python3").args(["-m", "venv"]).arg(&venv))?;
        util::run(
            command(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(KUBERNETES_VALIDATE),
        )?;
        self.installed.push(KUBERNETES_VALIDATE.into());
        self.botocore()
    }

    /// botocore in kubernetes-validate's virtual environment, unless its
    /// python imports it already.
    fn botocore(&mut self) -> Result<()> {
        let python = kubernetes_validate().with_file_name("python");
        let mut check = command(&python);
        check.args(["-c", "import botocore"]);
        if let Some(out) = util::probe(&mut check)?
            && out.status.success()
        {
            println!("   ok: botocore ({})", python.display());
            return Ok(());
        }
        println!("   missing: {BOTOCORE} (PyPI), installing into the same virtual environment");
        util::run(
            command(kubernetes_validate().with_file_name("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(BOTOCORE),
        )?;
        self.installed.push(BOTOCORE.into());
        Ok(())
    }

    /// cargo-fuzz (`cargo install`, into ~/.cargo/bin) unless `cargo fuzz`
    /// already runs. libFuzzer itself comes with the libfuzzer-sys crate,
    /// whose build script compiles it with the C++ compiler.
    fn cargo_fuzz(&mut self) -> Result<()> {
        self.tools(&[("c++", "g++")], false)?;
        if let Some(version) = cargo_fuzz_version()? {
            println!("   ok: {version}");
            return Ok(());
        }
        println!("   missing: cargo-fuzz, installing {CARGO_FUZZ_VERSION} (about a minute)");
        let mut cmd = util::cargo();
        cmd.args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]);
        util::run(&mut cmd)?;
        let version = cargo_fuzz_version()?
            .context("cargo-fuzz was installed but `cargo fuzz --version` still fails")?;
        println!("   ok: {version}");
        self.installed.push("cargo-fuzz".into());
        Ok(())
    }

    /// Docker's engine and a static busybox for the end-to-end test. Debian's
    /// docker.io would start dockerd (and listen on /var/run/docker.sock)
    /// from its postinst; a policy-rc.d that says no is in place while it is
    /// installed, and removed afterwards if this created it.
    fn docker_engine(&mut self) -> Result<()> {
        println!("== setup: Docker engine for the end-to-end test (installed, never started)");
        self.tools(DOCKER_TOOLS, true)
    }

    /// Each (tool, Debian package): the tool found on PATH, or its package
    /// installed; fails naming any tool still missing after that. With
    /// `no_service_starts`, packages cannot start services while installing.
    fn tools(&mut self, tools: &[(&str, &str)], no_service_starts: bool) -> Result<()> {
        let mut missing = BTreeSet::new();
        for &(tool, package) in tools {
            match util::find_program(tool) {
                Some(path) => println!("   ok: {tool} ({})", path.display()),
                None => {
                    println!("   missing: {tool} (Debian package {package})");
                    missing.insert(package);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        {
            let _policy = if no_service_starts {
                Some(NoServiceStarts::install()?)
            } else {
                None
            };
            self.ensure_apt(&missing.into_iter().collect::<Vec<_>>())?;
        }
        let still_missing: Vec<&str> = tools
            .iter()
            .filter(|(tool, _)| util::find_program(tool).is_none())
            .map(|&(tool, _)| tool)
            .collect();
        if !still_missing.is_empty() {
            bail!(
                "still not found after installing their packages: {}",
                still_missing.join(", ")
            );
        }
        Ok(())
    }

    /// Makes sure the Debian `packages` are installed; runs `apt-get update`
    /// (once per xtask run) and `apt-get install` for the missing ones.
    fn ensure_apt(&mut self, packages: &[&str]) -> Result<()> {
        let mut cmd = command("dpkg-query");
        cmd.args(["-W", "--showformat=${Package}=${db:Status-Status},"])
            .args(packages);
        // dpkg-query exits 1 when a package was never installed; the output
        // still lists the known ones.
        let Some(listing) = stdout_of(&mut cmd)? else {
            bail!(
                "dpkg-query not found: this setup supports Debian-based systems only; \
                 install the equivalents of {} yourself",
                packages.join(" ")
            );
        };
        let installed: BTreeSet<&str> = listing
            .split(',')
            .filter_map(|entry| entry.split_once('='))
            .filter(|&(_, status)| status == "installed")
            .map(|(package, _)| package)
            .collect();
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|package| !installed.contains(package))
            .collect();
        if missing.is_empty() {
            println!("   ok: {} installed", packages.join(", "));
            return Ok(());
        }
        println!("   missing: Debian packages {}", missing.join(", "));
        if !util::is_root()? {
            bail!(
                "installing Debian packages needs root and this is not root; run as root, or:\n    \
                 sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
                missing.join(" ")
            );
        }
        if !self.apt_updated {
            util::run(command("apt-get").arg("update"))?;
            self.apt_updated = true;
        }
        util::run(
            command("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )?;
        self.installed.extend(missing.iter().map(|&p| p.to_owned()));
        Ok(())
    }
}

/// A `policy-rc.d` that forbids starting services, present while it lives.
/// An existing file (a container image usually ships one) is left alone.
struct NoServiceStarts {
    created: bool,
}

impl NoServiceStarts {
    fn install() -> Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let path = std::path::Path::new(POLICY_RC_D);
        if path.exists() {
            println!("   ok: {POLICY_RC_D} exists, leaving it as it is");
            return Ok(Self { created: false });
        }
        if !util::is_root()? {
            // ensure_apt explains what to run instead.
            return Ok(Self { created: false });
        }
        println!("   writing {POLICY_RC_D} (exit 101) so that apt starts no service");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(path)
            .with_context(|| format!("creating {POLICY_RC_D}"))?;
        std::io::Write::write_all(
            &mut file,
            b"#!/bin/sh\n# cargo xtask setup: no service starts during apt-get install\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { created: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.created {
            println!("   removing {POLICY_RC_D}");
            if let Err(err) = std::fs::remove_file(POLICY_RC_D) {
                eprintln!("warning: removing {POLICY_RC_D}: {err}");
            }
        }
    }
}

/// Prints and runs `cmd`, returning its stdout whatever the exit status
/// (`None` if the program does not exist).
fn stdout_of(cmd: &mut std::process::Command) -> Result<Option<String>> {
    Ok(util::probe(cmd)?.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `cargo fuzz --version`, if cargo-fuzz is installed and runs.
fn cargo_fuzz_version() -> Result<Option<String>> {
    let mut cmd = util::cargo();
    cmd.args(["fuzz", "--version"]);
    Ok(util::probe(&mut cmd)?
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// bpf-linker's path and `--version` line, if it is on PATH or in
/// `$CARGO_HOME/bin` and runs.
fn find_bpf_linker() -> Result<Option<(PathBuf, String)>> {
    let candidates = which::which("bpf-linker")
        .ok()
        .into_iter()
        .chain(util::cargo_bin_dir().map(|dir| dir.join("bpf-linker")));
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        let mut cmd = command(&path);
        cmd.arg("--version");
        if let Some(out) = util::probe(&mut cmd)?
            && out.status.success()
        {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            return Ok(Some((path, version)));
        }
    }
    println!("   bpf-linker not found on PATH or in ~/.cargo/bin, or it does not run");
    Ok(None)
}
