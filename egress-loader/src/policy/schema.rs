//! The configuration file as written (TOML): every key optional, unknown
//! keys refused. Also the defaults that stand in for an absent key, and
//! those defaults written out as a file.

use egress_ebpf_common::{
    events::{DEFAULT_EVENT_BURST, DEFAULT_EVENT_RATE_PER_SEC},
    reply::{DEFAULT_REPLY_BURST, DEFAULT_REPLY_RATE_PER_SEC},
};
use serde::{Deserialize, Serialize};

use crate::policy::defaults::{DEFAULT_ACTION, DEFAULT_BLOCKS};

/// The file as written. Every key is optional; what is absent takes the default.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub dry_run: Option<bool>,
    /// The built-in block rules apply (default true); `[[block]]` adds to them.
    pub defaults: Option<bool>,
    pub attach: Option<AttachSection>,
    pub block: Option<Vec<BlockEntry>>,
    /// Built-in block rules removed, by name or CIDR.
    pub unblock: Option<Vec<UnblockEntry>>,
    pub smtp: Option<SmtpSection>,
    pub reject: Option<RejectSection>,
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
pub struct UnblockEntry {
    pub name: Option<String>,
    pub cidr: Option<String>,
}

/// The budget of the replies rejecting rules send.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RejectSection {
    /// At most this many resets and ICMP errors (default 100/second).
    pub rate: Option<String>,
    pub burst: Option<i64>,
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
    /// Judge what the host's decapsulating devices (vxlan, geneve, gre,
    /// ipip, tun...) hand up, found by link kind (default true).
    pub tunnels: Option<bool>,
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
    /// Ports not blocked (every protocol the rule blocks, or `except_protocol`).
    pub except_ports: Option<Vec<i64>>,
    pub except_protocol: Option<String>,
    /// `"drop"` (default) or `"reject"`.
    pub action: Option<String>,
    /// Free text, shown by `check-config`.
    pub comment: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    pub ports: Option<Vec<i64>>,
    pub rate: Option<String>,
    pub burst: Option<i64>,
    pub scope: Option<String>,
    /// `"drop"` (default, as the seed) or `"reject"` (a TCP reset).
    pub over_limit: Option<String>,
}

pub const DEFAULT_INTERFACES: &[&str] = &["docker0", "br-*"];
pub const DEFAULT_SMTP_PORTS: &[u16] = &[25, 465, 587, 2525];
pub const DEFAULT_SMTP_RATE: &str = "5/minute";
pub const DEFAULT_SMTP_BURST: u32 = 5;

/// The defaults written out as a configuration file (`check-config --defaults`
/// prints it; docs/configuration.md shows it). The built-in block rules are
/// not repeated as `[[block]]` entries (they apply by themselves): a comment
/// lists them.
///
/// [`default_config_toml`] with every setting commented out, under a header
/// saying so: the packaged `/etc/egress-filter/config.toml`. As shipped it
/// gives exactly the defaults; uncommenting a line changes one setting.
pub fn commented_default_config() -> String {
    let mut s = String::from(
        "# egress-filter configuration (egress-loader run --config FILE).\n\
         #\n\
         # Every setting below is commented out and shows its default: as shipped\n\
         # this file gives the default policy. Uncomment and change what you need.\n\
         # The built-in block rules (listed below) always apply: a [[block]] entry\n\
         # adds to them; remove one with [[unblock]] or all with defaults = false.\n\
         # The running loader follows this file: a valid edit is applied within a\n\
         # second, an invalid one is refused (logged, the policy in force stays).\n\
         # Check an edit first with\n\
         #   egress-loader check-config /etc/egress-filter/config.toml\n\
         # Reference: egress-loader-run(1), docs/configuration.md.\n\n",
    );
    for line in default_config_toml().lines() {
        if line.is_empty() {
            s.push('\n');
        } else if line.starts_with('#') {
            s.push_str(line);
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
    let mut s = String::from("dry_run = false\n\n");
    s.push_str(
        "# The built-in block rules apply; [[block]] entries add to them,\n\
         # [[unblock]] name = \"...\" removes one, defaults = false all of them.\n",
    );
    s.push_str("defaults = true\n");
    for d in DEFAULT_BLOCKS {
        let mut what = String::new();
        match (d.protocol, d.ports) {
            (None, _) => what.push_str("every protocol"),
            (Some(p), []) => what.push_str(p),
            (Some(p), ports) => {
                let l: Vec<String> = ports.iter().map(u16::to_string).collect();
                what.push_str(&format!("{p} {}", l.join(",")));
            }
        }
        if !d.except_ports.is_empty() {
            let l: Vec<String> = d.except_ports.iter().map(u16::to_string).collect();
            what.push_str(&format!(" but {}", l.join(",")));
        }
        s.push_str(&format!(
            "#   {:<26} {:<22} {:<22} {DEFAULT_ACTION}\n",
            d.name, d.cidr, what
        ));
    }
    s.push_str(
        "\n[attach]\ninterfaces = [\"docker0\", \"br-*\"]\nendpoints = true\ntunnels = true\n\
         docker_networks = true\ncgroups = [\"auto\"]\n",
    );
    let ports: Vec<String> = DEFAULT_SMTP_PORTS.iter().map(u16::to_string).collect();
    s.push_str(&format!(
        "\n[smtp]\nports = [{}]\nrate = \"{DEFAULT_SMTP_RATE}\"\nburst = {DEFAULT_SMTP_BURST}\nscope = \"global\"\nover_limit = \"drop\"\n",
        ports.join(", ")
    ));
    s.push_str(&format!(
        "\n[reject]\nrate = \"{DEFAULT_REPLY_RATE_PER_SEC}/second\"\nburst = {DEFAULT_REPLY_BURST}\n"
    ));
    s.push_str(&format!(
        "\n[events]\nenabled = true\nrate = \"{DEFAULT_EVENT_RATE_PER_SEC}/second\"\nburst = {DEFAULT_EVENT_BURST}\n"
    ));
    s
}
