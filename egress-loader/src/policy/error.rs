//! What the policy layer refuses in a value (from the file, a flag or a
//! `--block`): each becomes the problem of a
//! [`ConfigError`](crate::error::ConfigError), which names the field, or
//! clap's message for a flag's value.

use std::net::IpAddr;

/// A value that is not what its field takes; the text as it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0:?} is not a scope: use \"global\", \"per-source\" or \"per-container\"")]
    NotAScope(String),
    #[error("{0:?} is not a rate: write N/second, N/minute, N/hour or N/day")]
    NotARate(String),
    #[error("{count:?} in {rate:?} is not a whole number")]
    RateCount { count: String, rate: String },
    #[error("{0:?}: the rate must be at least 1 (to block SMTP entirely, add a block rule)")]
    ZeroRate(String),
    #[error("{unit:?} in {rate:?} is not a unit: use second, minute, hour or day")]
    RateUnit { unit: String, rate: String },
    #[error("{0:?} is faster than one per nanosecond")]
    RateTooFast(String),
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    NotAnAddress(String),
    #[error("{len:?} is not a prefix length (0-{max})")]
    NotAPrefixLength { len: String, max: u8 },
    #[error(
        "/{len} is longer than an {} address (/{max} at most)",
        if *.max == 32 { "IPv4" } else { "IPv6" }
    )]
    PrefixTooLong { len: u8, max: u8 },
    /// `network/prefix_len` is the prefix the text probably meant.
    #[error("{text:?} has host bits set: did you mean {network}/{prefix_len}?")]
    HostBitsSet {
        text: String,
        network: IpAddr,
        prefix_len: u8,
    },
    #[error("{0:?} would block every destination")]
    EveryDestination(String),
    #[error(
        "{0:?} is not a protocol: use \"tcp\" or \"udp\" (or leave it out to block every protocol)"
    )]
    NotAProtocol(String),
    #[error("{0:?} is not an action: use \"drop\" or \"reject\"")]
    NotAnAction(String),
    /// A port of a `--block` value.
    #[error("{port:?} in {flag:?} is not a port number")]
    BlockFlagPort { port: String, flag: String },
    #[error("{0:?} is not a port number")]
    NotAPort(String),
    #[error("{0:?}: a label key is not empty and has no surrounding spaces")]
    LabelKey(String),
    #[error("{0:?} is not a cgroup path")]
    NotACgroupPath(String),
    #[error(
        "{0:?}: a cgroup path starts with / (relative to the cgroup2 mount, \
         e.g. /docker or /system.slice/docker-*.scope), or use \"auto\" or \"kubepods\""
    )]
    RelativeCgroupPath(String),
    #[error(
        "\"/\" is the root cgroup, which holds every process of the host (its agents \
         need the metadata service): name the cgroup under which the engine creates \
         containers"
    )]
    RootCgroup,
    #[error("{0:?}: not a cgroup path (empty, \".\" or \"..\" component)")]
    CgroupComponent(String),
    #[error(
        "{0:?}: only the last component may hold * or ? (the cgroups that appear in one directory)"
    )]
    CgroupGlobNotLast(String),
    /// `parent` is the directory the pattern would take whole (empty: the
    /// root).
    #[error(
        "{text:?} would match every cgroup in {}, host services included: \
         give the pattern a fixed part (e.g. docker-*.scope)",
        if .parent.is_empty() { "the root".to_owned() } else { format!("/{}", .parent) }
    )]
    CgroupGlobOnly { text: String, parent: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are the ones the `String`s before said.
    #[test]
    fn messages() {
        for (e, want) in [
            (
                ValueError::PrefixTooLong { len: 33, max: 32 },
                "/33 is longer than an IPv4 address (/32 at most)",
            ),
            (
                ValueError::PrefixTooLong { len: 129, max: 128 },
                "/129 is longer than an IPv6 address (/128 at most)",
            ),
            (
                ValueError::HostBitsSet {
                    text: "10.0.0.1/8".into(),
                    network: "10.0.0.0".parse().unwrap(),
                    prefix_len: 8,
                },
                "\"10.0.0.1/8\" has host bits set: did you mean 10.0.0.0/8?",
            ),
            (
                ValueError::CgroupGlobOnly {
                    text: "/*".into(),
                    parent: String::new(),
                },
                "\"/*\" would match every cgroup in the root, host services included: give the \
                 pattern a fixed part (e.g. docker-*.scope)",
            ),
            (
                ValueError::CgroupGlobOnly {
                    text: "/system.slice/*".into(),
                    parent: "system.slice".into(),
                },
                "\"/system.slice/*\" would match every cgroup in /system.slice, host services \
                 included: give the pattern a fixed part (e.g. docker-*.scope)",
            ),
            (
                ValueError::BlockFlagPort {
                    port: "x".into(),
                    flag: "10.0.0.0/8:tcp/x".into(),
                },
                "\"x\" in \"10.0.0.0/8:tcp/x\" is not a port number",
            ),
        ] {
            assert_eq!(e.to_string(), want);
        }
    }
}
