//! The integration tests: one binary, one module per suite (as aya's
//! `test/integration-test`), so that the loader, bollard and tokio are
//! linked once rather than once per suite. The helpers live in the tests
//! library (`egress_tests`, tests/src/); `common` holds what only these
//! suites share: starting the loader and reading its JSON.
//!
//! A suite or a single test is chosen by name, as libtest names them:
//! `cargo test -p egress-tests --test integration lifecycle::` (a suite),
//! `... --test integration -- --exact lifecycle::status_check_reports_health_for_liveness_probes`.
//!
//! All suites share one process: a test must keep its state to itself (its
//! own namespaces, bpffs, temp files, names from `unique_name`), and set no
//! environment variable, working directory or signal disposition.

mod common;
mod frame_strategy;

mod adversarial_frames;
mod adversarial_wire;
mod concurrency;
mod config_follow;
mod coverage;
mod demo;
mod deploy;
mod docker_boot;
mod docker_e2e;
mod docs;
mod endpoints_docker;
mod exit_status;
mod filter_netns;
mod harness;
mod host_parser;
mod identity;
mod identity_docker;
mod kernel_log;
mod kernel_vs_host;
mod lifecycle;
mod observability;
mod prog_test_run;
mod program_shape;
mod properties;
mod reject_netns;
mod reject_test_run;
mod source_routes;
mod tunnels_netns;
mod upgrade;
