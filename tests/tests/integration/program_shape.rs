//! The classifier as the kernel holds it after verification: properties of
//! the translated program that decide its cost per packet and that the
//! source does not show.

use egress_tests::require_privileges;
use egress_tests::test_run::Classifier;

/// Every map lookup in the program is bound to one map, so the kernel calls
/// the map's own lookup (or inlines it) instead of the generic
/// `bpf_map_lookup_elem` helper, whose indirect call through the map's ops
/// is a retpoline on this kernel. LLVM merging the IPv4 and IPv6 trie
/// lookups into one call site did exactly that (see egress-ebpf's view.rs).
#[test]
fn every_map_lookup_is_bound_to_one_map() {
    require_privileges!();
    let mut c = Classifier::defaults();
    let info = c.program_info();
    println!(
        "classifier: id {}, {:?} bytes translated, {:?} instructions verified",
        info.id(),
        info.size_translated(),
        info.verified_instruction_count()
    );
    let out = std::process::Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &info.id().to_string()])
        .output()
        .expect("running bpftool (cargo xtask setup --test-deps installs it)");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let calls: Vec<&str> = text.lines().filter(|l| l.contains("call ")).collect();
    assert!(
        calls.iter().any(|l| l.contains("trie_lookup_elem")),
        "no direct trie lookup at all: is this the classifier?\n{}",
        calls.join("\n")
    );
    let generic: Vec<&&str> = calls
        .iter()
        .filter(|l| l.contains("call bpf_map_lookup_elem"))
        .collect();
    assert!(
        generic.is_empty(),
        "map lookups the verifier could not bind to one map:\n{}",
        generic
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
