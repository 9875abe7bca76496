//! The configuration file as written (TOML): every key optional, unknown
//! keys refused. Also the defaults that stand in for an absent key, and
//! those defaults written out as a file.

use egress_ebpf_common::events::{DEFAULT_EVENT_BURST, DEFAULT_EVENT_RATE_PER_SEC};
use serde::{Deserialize, Serialize};

/// The file as written. Every key is optional; what is absent takes the default.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub dry_run: Option<bool>,
    pub attach: Option<AttachSection>,
    pub block: Option<Vec<BlockEntry>>,
    pub smtp: Option<SmtpSection>,
    pub events: Option<EventsSection>,
    pub exception: Option<Vec<ExceptionEntry>>,
}

/// `[[exception]]`: containers carrying `label` may reach `destinations`
/// (blocked prefixes; absent: all of them), optionally with an SMTP budget
/// of their own.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExceptionEntry {
    /// A Docker container label: `key` or `key=value`.
    pub label: Option<String>,
    pub destinations: Option<Vec<String>>,
    /// `"unlimited"`: no SMTP limit for these containers.
    pub smtp: Option<String>,
    pub smtp_rate: Option<String>,
    pub smtp_burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// Report drops at all (default true).
    pub enabled: Option<bool>,
    /// At most this many drop events reach userspace (default 100/second).
    pub rate: Option<String>,
    pub burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AttachSection {
    pub interfaces: Option<Vec<String>>,
    /// Attach to each container's host-side veth too (default true).
    pub endpoints: Option<bool>,
    /// Also every bridge network the Docker engine has, whatever its
    /// interface name (default true).
    pub docker_networks: Option<bool>,
    /// Where the cgroup hooks attach (default `["auto"]`; `["none"]`: off).
    pub cgroups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BlockEntry {
    pub cidr: String,
    pub protocol: Option<String>,
    pub ports: Option<Vec<i64>>,
    /// Free text, shown by `status`.
    pub comment: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    pub ports: Option<Vec<i64>>,
    pub rate: Option<String>,
    pub burst: Option<i64>,
    pub scope: Option<String>,
}

/// The destinations blocked when the configuration names none: instance
/// metadata services of the major clouds.
pub const DEFAULT_BLOCKS: &[(&str, Option<&str>, &[u16], &str)] = &[
    (
        "169.254.169.254/32",
        None,
        &[],
        "instance metadata: AWS, Azure, GCP, OCI, DigitalOcean, OpenStack",
    ),
    (
        "169.254.170.2/32",
        None,
        &[],
        "ECS task metadata and credentials",
    ),
    ("100.100.100.200/32", None, &[], "Alibaba Cloud metadata"),
    ("192.0.0.192/32", None, &[], "Oracle Cloud metadata (OCI)"),
    (
        "fd00:ec2::254/128",
        None,
        &[],
        "AWS instance metadata over IPv6",
    ),
    (
        "168.63.129.16/32",
        Some("tcp"),
        &[80, 32526],
        "Azure WireServer and host agent (its DNS on 53 stays open)",
    ),
];
pub const DEFAULT_INTERFACES: &[&str] = &["docker0", "br-*"];
pub const DEFAULT_SMTP_PORTS: &[u16] = &[25, 465, 587, 2525];
pub const DEFAULT_SMTP_RATE: &str = "5/minute";
pub const DEFAULT_SMTP_BURST: u32 = 5;

/// The defaults written out as a configuration file (`check-config --defaults` prints it; docs/configuration.md shows it).
/// [`default_config_toml`] with every setting commented out, under a header
/// saying so: the packaged `/etc/egress-filter/config.toml`. As shipped it
/// gives exactly the defaults; uncommenting a line changes one setting.
pub fn commented_default_config() -> String {
    let mut s = String::from(
        "# egress-filter configuration (egress-loader run --config FILE).\n\
         #\n\
         # Every setting below is commented out and shows its default: as shipped\n\
         # this file gives the default policy. Uncomment and change what you need;\n\
         # a [[block]] list replaces the default list, so keep the metadata\n\
         # addresses in it. The running loader follows this file: a valid edit is\n\
         # applied within a second, an invalid one is refused (logged, the policy\n\
         # in force stays). Check an edit first with\n\
         #   egress-loader check-config /etc/egress-filter/config.toml\n\
         # Reference: egress-loader-run(1), docs/configuration.md.\n\n",
    );
    for line in default_config_toml().lines() {
        if line.is_empty() {
            s.push('\n');
        } else {
            s.push_str("# ");
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

pub fn default_config_toml() -> String {
    let mut s = String::from(
        "dry_run = false\n\n[attach]\ninterfaces = [\"docker0\", \"br-*\"]\nendpoints = true\n\
         docker_networks = true\ncgroups = [\"auto\"]\n",
    );
    for (cidr, proto, ports, comment) in DEFAULT_BLOCKS {
        s.push_str(&format!("\n[[block]]\ncidr = \"{cidr}\"\n"));
        if let Some(p) = proto {
            s.push_str(&format!("protocol = \"{p}\"\n"));
        }
        if !ports.is_empty() {
            let l: Vec<String> = ports.iter().map(u16::to_string).collect();
            s.push_str(&format!("ports = [{}]\n", l.join(", ")));
        }
        s.push_str(&format!("comment = \"{comment}\"\n"));
    }
    let ports: Vec<String> = DEFAULT_SMTP_PORTS.iter().map(u16::to_string).collect();
    s.push_str(&format!(
        "\n[smtp]\nports = [{}]\nrate = \"{DEFAULT_SMTP_RATE}\"\nburst = {DEFAULT_SMTP_BURST}\nscope = \"global\"\n",
        ports.join(", ")
    ));
    s.push_str(&format!(
        "\n[events]\nenabled = true\nrate = \"{DEFAULT_EVENT_RATE_PER_SEC}/second\"\nburst = {DEFAULT_EVENT_BURST}\n"
    ));
    s
}
