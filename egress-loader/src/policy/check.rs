//! What a valid policy leaves open that it should not: `check-config` and
//! `run` say it loudly (a warning, not a refusal: the file is valid).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::policy::{
    defaults::KNOWN_METADATA,
    trace::{first_packet, judge, model},
    values::Policy,
};

/// A container-like source for the probes (the decision does not look at
/// it for blocked destinations).
const SOURCE_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2));
const SOURCE_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0xdead, 0, 0, 0, 0, 0, 2));

/// The known metadata services the policy lets a container reach, as
/// `addr:port/proto (what)`, judged by the kernel's decision code.
pub fn open_metadata(policy: &Policy) -> Vec<String> {
    let m = model(policy);
    KNOWN_METADATA
        .iter()
        .filter(|e| {
            let dst = e.ip();
            let src = if dst.is_ipv4() { SOURCE_V4 } else { SOURCE_V6 };
            !judge(&m, &first_packet(src, dst, e.protocol, e.port))
                .verdict
                .drops()
        })
        .map(|e| {
            let addr = match e.ip() {
                IpAddr::V6(a) => format!("[{a}]"),
                a => a.to_string(),
            };
            format!("{addr}:{}/{} ({})", e.port, e.protocol, e.what)
        })
        .collect()
}

/// Every warning for `policy`, one line each.
pub fn warnings(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for b in &policy.blocks {
        if let Some(name) = &b.replaces {
            out.push(format!(
                "{} ({}) takes the place of the built-in rule {name:?}: it is now {}; \
                 remove it to get the built-in rule back",
                b.origin,
                b,
                b.describe()
            ));
        }
    }
    let open = open_metadata(policy);
    if !open.is_empty() {
        out.push(format!(
            "the policy leaves {} known metadata endpoint{} open to containers: {}",
            open.len(),
            if open.len() == 1 { "" } else { "s" },
            open.join(", ")
        ));
    }
    if policy.dry_run {
        out.push("dry_run: nothing is dropped or rejected, only counted".to_string());
    }
    out
}
