//! Where the workspace, its packages and their build outputs are, and the
//! names that xtask and the tests agree on.

use std::{
    env,
    path::{Path, PathBuf},
};

use anyhow::{Result, ensure};

/// The package whose build script builds and embeds the eBPF object; also
/// the name of its binary.
pub const LOADER_PACKAGE: &str = "egress-loader";

/// The variable naming the loader binary that the tests and the benchmark
/// run (`cargo xtask test`, `demo` and `bench` set it to what they built).
pub const LOADER_BIN_ENV: &str = "EGRESS_LOADER_BIN";

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("CARGO_MANIFEST_DIR is an absolute path below the workspace root")
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`, relative to the
/// workspace root when it is relative).
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The path of binary `name` that cargo built for `target` (`None`: the
/// host, without `--target`) and profile: `target/[<triple>/]{debug,release}/<name>`.
/// Fails if it is not there, e.g. when the build that should have made it
/// wrote it elsewhere.
pub fn built_binary(target: Option<&str>, release: bool, name: &str) -> Result<PathBuf> {
    let mut dir = target_dir();
    if let Some(target) = target {
        dir.push(target);
    }
    let bin = dir
        .join(if release { "release" } else { "debug" })
        .join(name);
    ensure!(
        bin.is_file(),
        "{} does not exist although the build succeeded",
        bin.display()
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{manifest}");
        assert!(
            workspace_root().join(LOADER_PACKAGE).is_dir(),
            "{} has no {LOADER_PACKAGE}/",
            workspace_root().display()
        );
    }

    #[test]
    fn missing_binary_is_an_error() {
        let err = built_binary(Some("no-such-triple"), true, "nothing").unwrap_err();
        assert!(
            err.to_string().contains("no-such-triple/release/nothing"),
            "{err}"
        );
    }
}
