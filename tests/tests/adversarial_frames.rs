//! What an attacker in a container can put on the bridge, fed to the real
//! classifier with BPF_PROG_TEST_RUN. The cases, each with the verdict the
//! policy requires and why, are the corpus in tests/src/corpus.rs (which
//! host_parser.rs also runs on the host, and kernel_vs_host.rs through both).

use egress_tests::{
    corpus::{self, Table},
    skip_unless_privileged,
    test_run::Classifier,
};

fn run_table(test: &str, table: Table) {
    if !skip_unless_privileged(test) {
        return;
    }
    let mut c = Classifier::with_policy(table.policy);
    for k in &table.cases {
        c.expect(&k.label(), &k.frame, k.verdict, k.counter);
    }
}

#[test]
fn truncated_at_every_header_boundary() {
    run_table("truncated", corpus::truncated_at_every_header_boundary());
}

#[test]
fn ipv4_header_lies() {
    run_table("ipv4_lies", corpus::ipv4_header_lies());
}

#[test]
fn vlan_stacks() {
    run_table("vlan_stacks", corpus::vlan_stacks());
}

#[test]
fn ipv6_extension_header_chains() {
    run_table("ipv6_chains", corpus::ipv6_extension_header_chains());
}

#[test]
fn ipv4_fragments() {
    run_table("ipv4_fragments", corpus::ipv4_fragments());
}

#[test]
fn ipv6_fragments() {
    run_table("ipv6_fragments", corpus::ipv6_fragments());
}

#[test]
fn every_tcp_flag_combination_with_syn() {
    run_table("tcp_flags", corpus::every_tcp_flag_combination_with_syn());
}

#[test]
fn tcp_data_offset_below_five() {
    run_table("tcp_doff", corpus::tcp_data_offset_below_five());
}

#[test]
fn azure_port_rule_and_fragments() {
    run_table("azure_fragments", corpus::azure_port_rule_and_fragments());
}
