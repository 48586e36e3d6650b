//! The daemon's one HTTP listener (`--listen`, or its old name `--metrics-listen`):
//! `/metrics` and `/health` for scrapers and probes, and the web console (`/`, `/api/`) when
//! it may be served there.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;

use super::health::Health;
use super::metrics::Metrics;
use crate::console::{self, Console, Token};
use crate::listener::{ClientAddr, LimitedListener};

/// Serves `/metrics` and `/health` on `address` until the process ends, and the console
/// beside them when one is given (behind `token` when there is one).
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    console: Option<(Console, Option<Token>)>,
) -> std::io::Result<SocketAddr> {
    let listener = LimitedListener::bind(address).await?;
    let bound = axum::serve::Listener::local_addr(&listener)?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let health = Arc::clone(&health);
                async move {
                    match health.problems().await {
                        None => (axum::http::StatusCode::OK, "ok\n".to_string()),
                        Some(problems) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, problems),
                    }
                }
            }),
        );
    let app = match console {
        Some((console, token)) => app.merge(console::router(Arc::new(console), token)),
        None => app,
    };
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<ClientAddr>();
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the daemon's HTTP listener stopped");
        }
    });
    Ok(bound)
}
