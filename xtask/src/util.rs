//! The helpers xtask shares with the test harness (the egress-devtools
//! crate), gathered under the one name xtask's modules use: running
//! commands, root and CI, finding programs, workspace paths, building the
//! loader.

pub use egress_devtools::{
    build::{build_loader, build_static_loader},
    machine::{find_program, in_ci, is_root},
    process::{announce, cargo, cargo_bin_dir, command, display, probe, run},
    workspace::{LOADER_BIN_ENV, built_binary, target_dir, workspace_root},
};
