//! Interface patterns: names with `*` and `?`, as `--iface` and
//! `attach.interfaces` take them.

use crate::error::ConfigError;

/// Interface patterns: names with `*` and `?` wildcards, at most 15 characters
/// (IFNAMSIZ - 1) without the wildcards.
pub fn validate_patterns(field: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            field,
            "empty list: name at least one interface or pattern",
        ));
    }
    for (i, p) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if p.is_empty() {
            return Err(ConfigError::new(f, "empty interface pattern"));
        }
        if p.chars()
            .any(|c| c == '/' || c.is_whitespace() || c == ':' || c.is_control())
        {
            return Err(ConfigError::new(
                f,
                format!("{p:?} cannot match an interface name (no '/', ':' or whitespace)"),
            ));
        }
        if p.chars().filter(|&c| c != '*').count() > 15 {
            return Err(ConfigError::new(
                f,
                format!("{p:?} is longer than an interface name can be (15)"),
            ));
        }
        if list[..i].contains(p) {
            return Err(ConfigError::new(f, format!("{p:?} is listed twice")));
        }
    }
    Ok(list)
}

/// Shell-style match of an interface name: `*` any run, `?` one character.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_patterns() {
        assert!(pattern_matches("br-*", "br-1a2b3c4d5e6f"));
        assert!(pattern_matches("docker0", "docker0"));
        assert!(!pattern_matches("docker0", "docker01"));
        assert!(pattern_matches("cni?", "cni0"));
        assert!(!pattern_matches("br-*", "bridge0"));
        assert!(pattern_matches("*", "anything"));
    }
}
