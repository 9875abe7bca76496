//! Where the cgroup hooks attach (`attach.cgroups`, `--cgroup`): the
//! cgroups under which the engine creates containers, so that a container
//! in the host's network namespace is judged from its first syscall.
//!
//! Each entry is `auto` (asked of the engine and the host, see
//! `endpoint::cgroup`), a cgroup path relative to the cgroup2 mount
//! (`/docker`, `/egress.slice`, `/kubepods.slice`), or a pattern whose last
//! component has `*`/`?` (`/system.slice/docker-*.scope`: each scope as it
//! appears, which is not race-free), or `kubepods` (Kubernetes' pod cgroup,
//! whichever of `/kubepods.slice` and `/kubepods` exists: an error when
//! neither does). `none` alone turns the hooks off.

use std::fmt;

use serde::Serialize;

use crate::{
    error::ConfigError,
    policy::{error::ValueError, glob::pattern_matches},
};

/// One `attach.cgroups` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum CgroupSpec {
    /// Detect from the engine (its cgroup driver and parent) and the host
    /// (`kubepods.slice`, `kubepods`).
    Auto,
    /// Kubernetes' pod cgroup: `kubepods.slice` (the kubelet's systemd
    /// cgroup driver) or `kubepods` (cgroupfs), whichever exists; never
    /// created, and `run` refuses to start when neither exists (the loader
    /// does not see the node's cgroup tree, or this is not a node).
    Kubepods,
    /// One cgroup, relative to the cgroup2 mount, without a leading `/`.
    Path(String),
    /// Every cgroup in `parent` whose name matches `name` (a glob), as it
    /// appears.
    Pattern { parent: String, name: String },
}

impl fmt::Display for CgroupSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupSpec::Auto => f.write_str("auto"),
            CgroupSpec::Kubepods => f.write_str("kubepods"),
            CgroupSpec::Path(p) => write!(f, "/{p}"),
            CgroupSpec::Pattern { parent, name } if parent.is_empty() => write!(f, "/{name}"),
            CgroupSpec::Pattern { parent, name } => write!(f, "/{parent}/{name}"),
        }
    }
}

impl From<CgroupSpec> for String {
    fn from(s: CgroupSpec) -> String {
        s.to_string()
    }
}

impl CgroupSpec {
    /// Whether `rel` (a cgroup path relative to the mount) is one this entry names.
    pub fn matches(&self, rel: &str) -> bool {
        match self {
            CgroupSpec::Auto => false,
            CgroupSpec::Kubepods => KUBEPODS.contains(&rel),
            CgroupSpec::Path(p) => p == rel,
            CgroupSpec::Pattern { parent, name } => {
                let (dir, last) = match rel.rsplit_once('/') {
                    Some((d, l)) => (d, l),
                    None => ("", rel),
                };
                dir == parent && pattern_matches(name, last)
            }
        }
    }
}

/// Kubernetes' pod cgroups, relative to the cgroup2 mount: the kubelet's
/// systemd cgroup driver's name, then cgroupfs'. Pods are below them
/// (`kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope`,
/// `<qos>/pod<uid>/<id>`), and the kubelet creates both before any pod.
pub const KUBEPODS: [&str; 2] = ["kubepods.slice", "kubepods"];

fn is_glob(s: &str) -> bool {
    s.contains('*') || s.contains('?')
}

/// Parses one entry. The root cgroup is refused: it holds every process of
/// the host, whose own agents need the metadata service.
pub fn parse_spec(text: &str) -> Result<CgroupSpec, ValueError> {
    if text == "auto" {
        return Ok(CgroupSpec::Auto);
    }
    if text == "kubepods" {
        return Ok(CgroupSpec::Kubepods);
    }
    if text.chars().any(|c| c.is_control() || c == '\n') {
        return Err(ValueError::NotACgroupPath(text.into()));
    }
    if !text.starts_with('/') {
        return Err(ValueError::RelativeCgroupPath(text.into()));
    }
    let rel = text.trim_matches('/');
    if rel.is_empty() {
        return Err(ValueError::RootCgroup);
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(ValueError::CgroupComponent(text.into()));
    }
    let (last, dirs) = parts.split_last().expect("not empty");
    if dirs.iter().any(|d| is_glob(d)) {
        return Err(ValueError::CgroupGlobNotLast(text.into()));
    }
    if is_glob(last) {
        if last.chars().all(|c| c == '*' || c == '?') {
            return Err(ValueError::CgroupGlobOnly {
                text: text.into(),
                parent: dirs.join("/"),
            });
        }
        return Ok(CgroupSpec::Pattern {
            parent: dirs.join("/"),
            name: (*last).to_owned(),
        });
    }
    Ok(CgroupSpec::Path(rel.to_owned()))
}

/// The validated list; `["none"]` is the empty list (the hooks off).
pub fn validate_cgroups(field: &str, list: Vec<String>) -> Result<Vec<CgroupSpec>, ConfigError> {
    if list.iter().any(|s| s == "none") {
        if list.len() > 1 {
            return Err(ConfigError::new(
                field,
                "\"none\" turns the cgroup hooks off: it cannot be combined with other entries",
            ));
        }
        return Ok(Vec::new());
    }
    if list.is_empty() {
        return Err(ConfigError::new(
            field,
            "empty list: use [\"none\"] to turn the cgroup hooks off, or leave the key out for \"auto\"",
        ));
    }
    let mut out: Vec<CgroupSpec> = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let spec = parse_spec(text).map_err(|e| ConfigError::new(&f, e))?;
        if out.contains(&spec) {
            return Err(ConfigError::new(f, format!("{text:?} is listed twice")));
        }
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        assert_eq!(parse_spec("auto"), Ok(CgroupSpec::Auto));
        let k = parse_spec("kubepods").unwrap();
        assert_eq!(k, CgroupSpec::Kubepods);
        assert_eq!(k.to_string(), "kubepods");
        assert!(k.matches("kubepods.slice") && k.matches("kubepods"));
        assert!(!k.matches("kubepods.slice/kubepods-besteffort.slice"));
        assert_eq!(parse_spec("/docker"), Ok(CgroupSpec::Path("docker".into())));
        assert_eq!(
            parse_spec("/egress.slice/"),
            Ok(CgroupSpec::Path("egress.slice".into()))
        );
        let scopes = parse_spec("/system.slice/docker-*.scope").unwrap();
        assert_eq!(
            scopes,
            CgroupSpec::Pattern {
                parent: "system.slice".into(),
                name: "docker-*.scope".into()
            }
        );
        assert!(scopes.matches("system.slice/docker-0123.scope"));
        assert!(!scopes.matches("system.slice/ssh.service"));
        assert!(!scopes.matches("other.slice/docker-0123.scope"));
        assert_eq!(scopes.to_string(), "/system.slice/docker-*.scope");
        assert!(CgroupSpec::Path("docker".into()).matches("docker"));
        for bad in [
            "/",
            "//",
            "docker",
            "/a/../b",
            "/a//b",
            "/*",
            "/system.slice/*",
            "/*.slice/docker-1.scope",
            "",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lists() {
        assert_eq!(validate_cgroups("f", vec!["none".into()]), Ok(vec![]));
        let e = validate_cgroups("f", vec!["none".into(), "/docker".into()]).unwrap_err();
        assert_eq!(e.field, "f");
        let e = validate_cgroups("f", vec!["/docker".into(), "/docker/".into()]).unwrap_err();
        assert_eq!(e.field, "f[1]");
        let e = validate_cgroups("f", vec!["auto".into(), "/".into()]).unwrap_err();
        assert_eq!(e.field, "f[1]");
        assert!(validate_cgroups("f", vec![]).is_err());
    }
}
