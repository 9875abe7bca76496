use egress_loader::{
    Error,
    error::CheckFailure,
    verify::{VerifyOptions, verify},
};

use super::{
    Result,
    args::{EngineArgs, PinDirArg},
};

/// Prove, on this host, that each attached bridge and cgroup really filters,
/// and that no running container is UNCOVERED.
///
/// For each bridge, plugs a throwaway network namespace into it (a veth and
/// an unused address at the top of the bridge's subnet), sends a TCP SYN to
/// 169.254.169.254:80 and SYNs to an SMTP port of 192.0.2.25 (TEST-NET-1),
/// and checks the bridge's own counters: the metadata probe must be dropped
/// and counted as metadata_blocked, the SMTP attempts counted. Probes carry
/// TTL 1, so the host never forwards them, filter or not. The namespace is
/// removed afterwards, also on error. For each cgroup the cgroup hooks are
/// attached to, a process in a new cgroup below it connects to the metadata
/// address (TTL 1, non-blocking): the connect() must be refused with EPERM
/// and counted. For each decapsulating device (vxlan, geneve, gre, ipip,
/// tun...), the program in its attachment is run by the kernel
/// (BPF_PROG_TEST_RUN, nothing sent) on an inner SYN to the metadata
/// address as if on that device: it must be dropped and counted there; a
/// device without the program fails. With an engine, every UNCOVERED
/// container or network fails.
/// Exit status 1 if anything fails.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  \
    egress-loader verify                       # every attached bridge\n  \
    egress-loader verify --iface docker0 --iface 'br-*'   # these, attached or not\n  \
    egress-loader verify --smtp-syns 6 --json  # a full default bucket (burst 5) admits 5, limits 1",
    mut_args(EngineArgs::help(
        "Docker engine whose containers and networks must all be covered (an UNCOVERED one \
         fails): unix:///PATH [default: $DOCKER_HOST if it is a unix:// URL, else \
         unix:///var/run/docker.sock]",
        "Do not ask a Docker engine: bridges and cgroups only",
    ))
)]
pub struct Args {
    #[command(flatten)]
    pin_dir: PinDirArg,
    /// Bridge name or pattern (`*`, `?`) to verify; repeatable. An unattached
    /// match fails. [default: every interface the filter is attached to]
    #[arg(long = "iface", value_name = "PATTERN")]
    ifaces: Vec<String>,
    /// SMTP connection attempts per bridge (1 to 64). Each is charged to the
    /// SMTP bucket: with scope = "global", the whole host's.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    smtp_syns: u32,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The report first, then the verdict: a FAIL is a failed check (exit 1).
pub fn main(a: Args) -> Result {
    let report = verify(&VerifyOptions {
        pins: a.pin_dir.pins(),
        patterns: a.ifaces,
        smtp_syns: a.smtp_syns,
        engine: a.engine.endpoint()?,
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&report).expect("serializable"));
    } else {
        print!("{}", report.render());
    }
    if report.passed() {
        return Ok(());
    }
    let failed = report.failed_bridges();
    Err(Error::CheckFailed(if failed.is_empty() {
        CheckFailure::VerifyProblem
    } else {
        CheckFailure::DoesNotFilter(failed.into_iter().map(String::from).collect())
    }))
}
