//! The async runtime the loader's synchronous entry points block on: one
//! thread (the loader's work is waiting on netlink, the engine's socket and
//! timers, not computing), with I/O and time enabled. `run` drives the
//! daemon on it; `status`, `explain` and `verify` use one for a few requests
//! (legacy tc filters, the engine's containers, the probe's netlink).

use tokio::runtime::{Builder, Runtime};

/// A new current-thread runtime with I/O and timers. A runtime serves the
/// network namespace of the thread that opened each socket, so a thread that
/// changes namespace builds its own (`verify`'s probe).
pub fn current_thread() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}
