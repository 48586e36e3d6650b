//! Injected faults: which request gets one, and a connection that breaks mid-answer.

use axum::body::{Body, Bytes};
use axum::response::Response;
use rand::RngExt;

use super::{Fault, Shared};

/// Draws whether a request gets a fault, and which.
pub(super) fn pick_fault(shared: &Shared) -> Option<Fault> {
    let config = &shared.config;
    if config.faults.is_empty() || config.fault_rate <= 0.0 {
        return None;
    }
    let mut rng = shared
        .rng
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if rng.random::<f64>() >= config.fault_rate {
        return None;
    }
    let index = rng.random_range(0..config.faults.len());
    config.faults.get(index).copied()
}

/// A 200 whose body breaks off: the client sees the connection drop mid-answer.
pub(super) fn dropped_connection() -> Response {
    let broken = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox dropped the connection",
        ))
    });
    Response::new(Body::from_stream(broken))
}
