//! What an attacker in a container can put on the bridge, fed to the real
//! classifier with BPF_PROG_TEST_RUN. The cases, each with the verdict the
//! policy requires and why, are the corpus in tests/src/corpus.rs (which
//! host_parser.rs also runs on the host, and kernel_vs_host.rs through both).

use egress_tests::{
    corpus::{self, Table},
    require_privileges,
    test_run::Classifier,
};

fn run_table(table: Table) {
    let mut c = Classifier::with_policy(table.policy);
    for k in &table.cases {
        c.expect(&k.label(), &k.frame, k.verdict, k.counter);
    }
}

#[test]
fn truncated_at_every_header_boundary() {
    require_privileges!();
    run_table(corpus::truncated_at_every_header_boundary());
}

#[test]
fn ipv4_header_lies() {
    require_privileges!();
    run_table(corpus::ipv4_header_lies());
}

#[test]
fn vlan_stacks() {
    require_privileges!();
    run_table(corpus::vlan_stacks());
}

#[test]
fn ipv6_extension_header_chains() {
    require_privileges!();
    run_table(corpus::ipv6_extension_header_chains());
}

#[test]
fn ipv4_fragments() {
    require_privileges!();
    run_table(corpus::ipv4_fragments());
}

#[test]
fn ipv6_fragments() {
    require_privileges!();
    run_table(corpus::ipv6_fragments());
}

#[test]
fn every_tcp_flag_combination_with_syn() {
    require_privileges!();
    run_table(corpus::every_tcp_flag_combination_with_syn());
}

#[test]
fn tcp_data_offset_below_five() {
    require_privileges!();
    run_table(corpus::tcp_data_offset_below_five());
}

#[test]
fn azure_port_rule_and_fragments() {
    require_privileges!();
    run_table(corpus::azure_port_rule_and_fragments());
}
