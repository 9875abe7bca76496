//! The command line's side of a policy: the value syntaxes clap parses
//! (`--block`, `--smtp-ports`) and the [`Overrides`] the flags make.

use crate::policy::{error::ValueError, schema::BlockEntry};

/// `CIDR[:tcp|udp[/PORT,PORT...]]`, the `--block` syntax. IPv6 addresses
/// contain colons, so only a trailing `:tcp...`/`:udp...` is a protocol.
pub fn parse_block_flag(s: &str) -> Result<BlockEntry, ValueError> {
    let mut cidr = s;
    let mut protocol = None;
    let mut ports = None;
    if let Some(idx) = s.rfind(':') {
        let tail = &s[idx + 1..];
        let (proto, port_list) = match tail.split_once('/') {
            Some((p, l)) => (p, Some(l)),
            None => (tail, None),
        };
        if proto == "tcp" || proto == "udp" {
            cidr = &s[..idx];
            protocol = Some(proto.to_string());
            if let Some(l) = port_list {
                let parsed: Result<Vec<i64>, ValueError> = l
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<i64>()
                            .map_err(|_| ValueError::BlockFlagPort {
                                port: p.into(),
                                flag: s.into(),
                            })
                    })
                    .collect();
                ports = Some(parsed?);
            }
        }
    }
    Ok(BlockEntry {
        cidr: cidr.to_string(),
        protocol,
        ports,
        except_ports: None,
        except_protocol: None,
        action: None,
        comment: Some("--block".to_string()),
    })
}

/// Comma-separated ports, the `--smtp-ports` syntax. A newtype, because clap
/// takes a bare `Vec` field for a repeated argument, not for one list value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortList(pub Vec<i64>);

pub fn parse_port_list(s: &str) -> Result<PortList, ValueError> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<i64>()
                .map_err(|_| ValueError::NotAPort(p.into()))
        })
        .collect::<Result<_, _>>()
        .map(PortList)
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub interfaces: Vec<String>,
    /// `--cgroup`, repeatable; replaces `attach.cgroups`.
    pub cgroups: Vec<String>,
    /// `--no-docker-networks`.
    pub no_docker_networks: bool,
    pub extra_blocks: Vec<BlockEntry>,
    pub smtp_ports: Option<Vec<i64>>,
    pub smtp_rate: Option<String>,
    pub smtp_burst: Option<i64>,
    pub scope: Option<String>,
    pub dry_run: bool,
    /// `--no-endpoints`: the bridges only, no per-container veth programs.
    pub no_endpoints: bool,
    /// `--no-tunnels`: leave the decapsulating devices alone.
    pub no_tunnels: bool,
}

/// A `--block` value as it was written, for errors.
pub fn flag_text(b: &BlockEntry) -> String {
    let mut s = b.cidr.clone();
    if let Some(p) = &b.protocol {
        s.push(':');
        s.push_str(p);
        if let Some(ports) = &b.ports {
            s.push('/');
            s.push_str(
                &ports
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_flag_syntax_with_ipv6_colons() {
        let b = parse_block_flag("168.63.129.16/32:tcp/80,32526").unwrap();
        assert_eq!(
            (b.cidr.as_str(), b.protocol.as_deref(), b.ports),
            ("168.63.129.16/32", Some("tcp"), Some(vec![80, 32526]))
        );
        let b = parse_block_flag("fd00:ec2::254/128:udp/53").unwrap();
        assert_eq!(
            (b.cidr.as_str(), b.protocol.as_deref(), b.ports),
            ("fd00:ec2::254/128", Some("udp"), Some(vec![53]))
        );
        let b = parse_block_flag("fd00:ec2::254").unwrap();
        assert_eq!((b.cidr.as_str(), b.protocol), ("fd00:ec2::254", None));
        let b = parse_block_flag("10.0.0.0/8:tcp").unwrap();
        assert_eq!((b.protocol.as_deref(), b.ports), (Some("tcp"), None));
        assert!(parse_block_flag("10.0.0.0/8:tcp/x").is_err());
    }
}
