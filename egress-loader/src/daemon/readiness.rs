//! Telling systemd (`Type=notify`) when the filter is in force. READY=1 is
//! sent once the policy is in the maps and every interface that exists and
//! matches is attached, so units ordered after this one (docker.service,
//! containerd.service, kubelet.service) start only then. Without
//! `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use log::debug;
use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    // A failure to notify must not stop the filter; systemd's start timeout
    // reports a unit that never became ready.
    if let Err(e) = sd_notify::notify(false, states) {
        debug!("sd_notify: {e}");
    }
}

/// The filter is in force: the policy is applied and the existing
/// interfaces are attached.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new status line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The loader is exiting (the pinned filter stays unless --detach-on-exit).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
