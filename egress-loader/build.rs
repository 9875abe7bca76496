//! Builds the classifier (egress-ebpf) for the BPF target with aya-build and
//! leaves it in OUT_DIR for `include_bytes_aligned!`. Without bpf-linker
//! (plain `cargo check`/clippy on a machine that never ran `cargo xtask
//! setup`) it writes an empty stand-in, and the binary says so when run.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("egress-ebpf");
    println!("cargo:rerun-if-env-changed=EGRESS_SKIP_EBPF");
    let skip = std::env::var_os("EGRESS_SKIP_EBPF").is_some_and(|v| v == "1");
    if skip || which_bpf_linker().is_none() {
        println!(
            "cargo:warning=building egress-loader WITHOUT the eBPF object ({}); run `cargo xtask setup` for a working binary",
            if skip {
                "EGRESS_SKIP_EBPF=1"
            } else {
                "bpf-linker not found"
            }
        );
        std::fs::write(&out, [])?;
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = metadata
        .packages
        .into_iter()
        .find(|p| p.name == "egress-ebpf")
        .ok_or_else(|| anyhow!("egress-ebpf package not found"))?;
    // aya-build watches the eBPF crate's own directory only; the parser and
    // the decision it runs live in egress-ebpf-common (a path dependency).
    for dep in &pkg.dependencies {
        if let Some(path) = &dep.path {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", pkg.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "egress-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(std::path::PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
