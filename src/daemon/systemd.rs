//! Talking to systemd: `READY=1`, `STATUS=`, `WATCHDOG=1`, `RELOADING=1`, `STOPPING=1` over
//! `$NOTIFY_SOCKET`. Outside systemd (no socket) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends states to systemd; failures are logged, never fatal.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// The first load is done: the service is up.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line status for `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// A reload starts (SIGHUP); [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Shutdown starts.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog's keep-alive.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// How often to send [`watchdog`]: half of `WatchdogSec=`, or `None` when it is not set.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}
