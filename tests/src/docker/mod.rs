//! A real Docker engine for end-to-end tests, isolated from the machine's own
//! networking (docs/design.md, "Real Docker, still isolated").
//!
//! [`DockerHost`] runs containerd and dockerd from Debian's `docker.io`
//! inside a network namespace of their own ("dkhost"), with their state in a
//! temporary directory and their containers in a cgroup of their own, and
//! gives that namespace an uplink to a "cloud" namespace holding the fake
//! metadata service and an SMTP server. [`images`] builds the two images the
//! tests use, both `FROM scratch` (no registry is ever contacted): a
//! busybox one for the containers that probe, and the filter's own image from
//! `deploy/Dockerfile`. [`verdict`] turns what the probes saw into verdicts
//! and the iptables-versus-egress-filter table.

pub mod engine;
pub mod images;
pub mod verdict;

pub use engine::{DockerHost, docker_problem, skip_unless_docker};
pub use verdict::{Reach, Row, Verdict};

/// A Docker engine for the test (`prefix` names its namespaces) with the
/// busybox image built in it; panics when either fails.
pub fn start_docker(prefix: &str) -> DockerHost {
    let dh = DockerHost::start(prefix).unwrap_or_else(|e| panic!("starting Docker: {e:#}"));
    images::build_busybox_image(&dh).unwrap_or_else(|e| panic!("busybox image: {e:#}"));
    dh
}
