//! What the developer tasks (`xtask`) and the test harness (`egress-tests`)
//! both need, defined once: where the workspace and its build outputs are
//! ([`workspace`]), printing and running commands ([`process`]), what this
//! machine has (root, CI, programs: [`machine`]), building the loader,
//! statically linked for the image ([`build`]), and the image's build
//! context and static-binary check ([`image`]).
//!
//! Arrows: `xtask -> egress-devtools <- egress-tests <- egress-bench`. This
//! crate depends on no workspace crate and on nothing that needs the eBPF
//! toolchain, so xtask, which installs that toolchain, still builds before
//! `cargo xtask setup` has run; and the harness does not depend on the task
//! runner that runs it.

pub mod build;
pub mod image;
pub mod machine;
pub mod process;
pub mod workspace;
