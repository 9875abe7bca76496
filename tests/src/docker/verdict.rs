//! What a probe from inside a container saw, and the table comparing the
//! seed's iptables rules with the egress filter on the same traffic.

use std::fmt;

/// The outcome of one connection attempt made by busybox (`wget` under
/// `timeout`, or `nc -w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The TCP handshake completed (and for HTTP, a 200 came back).
    Connected,
    /// Refused: a RST or an ICMP error came back (iptables `REJECT`).
    Refused,
    /// Nothing came back before the timeout (the SYN was dropped).
    TimedOut,
}

impl Reach {
    /// Classifies `timeout N wget -q -O- URL; echo exit=$?` output: exit 0
    /// is `Connected`, "refused" in the output is `Refused`, the exit status
    /// of busybox `timeout` when it had to kill (143) or "Terminated" is
    /// `TimedOut`. Anything else is `None` (an unexpected failure).
    pub fn from_busybox(exit: i32, output: &str) -> Option<Reach> {
        let lower = output.to_ascii_lowercase();
        if exit == 0 {
            Some(Reach::Connected)
        } else if lower.contains("refused") {
            Some(Reach::Refused)
        } else if exit == 143
            || exit == 124
            || lower.contains("terminated")
            || lower.contains("timed out")
        {
            Some(Reach::TimedOut)
        } else {
            None
        }
    }

    /// Whether the destination was reached.
    pub fn reached(self) -> bool {
        self == Reach::Connected
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reach::Connected => "reachable",
            Reach::Refused => "unreachable (refused)",
            Reach::TimedOut => "unreachable (timed out)",
        })
    }
}

/// The verdict of one scenario under one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// One connection attempt.
    Single(Reach),
    /// `of` attempts at once, `connected` of them completed.
    Attempts { connected: usize, of: usize },
}

impl Verdict {
    /// How much got through: 1/0 for a single attempt, the count otherwise.
    pub fn let_through(&self) -> usize {
        match *self {
            Verdict::Single(r) => usize::from(r.reached()),
            Verdict::Attempts { connected, .. } => connected,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Single(r) => write!(f, "{r}"),
            Verdict::Attempts { connected, of } => write!(f, "{connected}/{of} connected"),
        }
    }
}

/// How the egress filter's verdict compares with iptables'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Exactly the same.
    Same,
    /// Both unreachable, one by a drop and one by a reject.
    SameBlockedDifferently,
    /// The egress filter let less through.
    FilterStricter,
    /// The egress filter let more through: a bug.
    FilterLooser,
}

/// Compares `filter` with `iptables` for one scenario.
pub fn compare(iptables: Verdict, filter: Verdict) -> Comparison {
    if iptables == filter {
        return Comparison::Same;
    }
    match filter.let_through().cmp(&iptables.let_through()) {
        std::cmp::Ordering::Greater => Comparison::FilterLooser,
        std::cmp::Ordering::Less => Comparison::FilterStricter,
        std::cmp::Ordering::Equal => Comparison::SameBlockedDifferently,
    }
}

/// One line of the equivalence table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was tried, from where.
    pub scenario: String,
    /// With the seed's three rules in DOCKER-USER (filter detached).
    pub iptables: Verdict,
    /// With the egress filter container (no iptables rules of ours).
    pub filter: Verdict,
    /// Why a difference is expected, if one is.
    pub note: &'static str,
}

impl Row {
    /// [`compare`] of this row.
    pub fn comparison(&self) -> Comparison {
        compare(self.iptables, self.filter)
    }

    fn same_column(&self) -> String {
        match self.comparison() {
            Comparison::Same => "yes".into(),
            Comparison::SameBlockedDifferently => format!("yes: both unreachable; {}", self.note),
            Comparison::FilterStricter => format!("no, egress-filter stricter: {}", self.note),
            Comparison::FilterLooser => "NO, egress-filter LOOSER: a bug".into(),
        }
    }
}

/// The table, as `scenario | iptables | egress-filter | same?` with aligned
/// columns.
pub fn render_table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "iptables (seed rules)",
        "egress-filter",
        "same?",
    ];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.iptables.to_string(),
                r.filter.to_string(),
                r.same_column(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |c: [&str; 4]| {
        format!(
            "| {:w0$} | {:w1$} | {:w2$} | {:w3$} |\n",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )
    };
    let mut s = line(header);
    s.push_str(&format!(
        "|{}|{}|{}|{}|\n",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 2),
        "-".repeat(widths[2] + 2),
        "-".repeat(widths[3] + 2)
    ));
    for c in &cells {
        s.push_str(&line([&c[0], &c[1], &c[2], &c[3]]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_busybox_output() {
        assert_eq!(
            Reach::from_busybox(0, "ok 169.254.169.254:80\n"),
            Some(Reach::Connected)
        );
        assert_eq!(
            Reach::from_busybox(
                1,
                "wget: can't connect to remote host (169.254.169.254): Connection refused"
            ),
            Some(Reach::Refused)
        );
        assert_eq!(
            Reach::from_busybox(143, "Terminated"),
            Some(Reach::TimedOut)
        );
        assert_eq!(Reach::from_busybox(1, "wget: bad address"), None);
    }

    #[test]
    fn comparisons() {
        let s = Verdict::Single;
        assert_eq!(
            compare(s(Reach::Connected), s(Reach::Connected)),
            Comparison::Same
        );
        assert_eq!(
            compare(s(Reach::Refused), s(Reach::TimedOut)),
            Comparison::SameBlockedDifferently
        );
        assert_eq!(
            compare(s(Reach::Connected), s(Reach::TimedOut)),
            Comparison::FilterStricter
        );
        assert_eq!(
            compare(s(Reach::Refused), s(Reach::Connected)),
            Comparison::FilterLooser
        );
        let a = |connected| Verdict::Attempts { connected, of: 5 };
        assert_eq!(compare(a(3), a(3)), Comparison::Same);
        assert_eq!(compare(a(3), a(2)), Comparison::FilterStricter);
        assert_eq!(compare(a(3), a(4)), Comparison::FilterLooser);
    }

    #[test]
    fn table_is_aligned() {
        let rows = [Row {
            scenario: "docker0: GET http://169.254.169.254/".into(),
            iptables: Verdict::Single(Reach::Refused),
            filter: Verdict::Single(Reach::TimedOut),
            note: "REJECT vs drop",
        }];
        let t = render_table(&rows);
        let widths: Vec<usize> = t.lines().map(str::len).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{t}");
        assert!(t.contains("yes: both unreachable; REJECT vs drop"), "{t}");
    }
}
