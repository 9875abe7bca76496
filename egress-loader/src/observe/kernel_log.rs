//! The classifier's own log lines: the rare conditions it reports through
//! aya-log (never per packet, at most one line a second per condition; see
//! egress-ebpf's `log` module), read from its `AYA_LOGS` ring buffer and
//! written through the `log` crate at the level the kernel gave each.

use aya::Ebpf;
use aya_log::EbpfLogger;
use log::warn;
use tokio::io::{Interest, unix::AsyncFd};

/// Forwards the log lines of the classifier loaded in `ebpf` for as long as
/// the runtime runs. The filter works without them: a failure is a warning.
pub fn spawn(ebpf: &mut Ebpf) {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            warn!("the classifier's log lines will not be shown: {e}");
            return;
        }
    };
    // The ring buffer's fd is readable (epoll) when records are waiting.
    // SAFETY: the logger owns its map fd for as long as the AsyncFd holds
    // the logger, and nothing else closes or replaces it.
    let mut ready = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(r) => r,
        Err(e) => {
            warn!("the classifier's log lines will not be shown: polling AYA_LOGS: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let mut guard = match ready.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    warn!("no more log lines from the classifier: {e}");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
