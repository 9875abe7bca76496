//! The daemon: `run`'s loop, which wires the layers below together.
//!
//! ```text
//! run        load, apply, attach, then follow signals, link events, drop events
//! reconcile  attachments in line with the interfaces that exist and match
//! reload     SIGHUP: re-read --config, apply it without detaching
//! gc         forget refilled per-source SMTP buckets
//! ```

mod gc;
mod reconcile;
mod reload;
mod run;

pub use run::{RunOptions, run};
