//! The web console: every pipeline of a folder with its next fires and last run, every run
//! and why its records were refused, as pages and as a JSON API, over any state store's
//! history. `tapline ui` serves it alone; the daemon serves it on its `--listen` address.
//!
//! It only reads: the history through the [`History`] role (never its tables), the pipeline
//! files through `config`, a run's rejects file for its reasons. Every page is HTML written
//! on the server with every text escaped ([`pages`]), under a Content-Security-Policy that
//! allows only the console's own stylesheet; no asset comes from outside the binary.

mod actions;
mod api;
mod auth;
mod chart;
mod live;
mod overview;
mod pages;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use auth::Token;
pub use live::{Action, Answer, Asked, DaemonLink, Entry, Refusal};

use crate::listener::{ClientAddr, LimitedListener};
use crate::state::{History, Location, StateError};

/// What the console serves from.
pub struct Console {
    /// The history it reads (one connection, used by one request at a time).
    history: Mutex<Box<dyn History + Send>>,
    /// Where the state store is, as pages name it (never a password).
    store: String,
    /// `sqlite` or `postgres`.
    store_kind: &'static str,
    /// The folder of pipeline files.
    dir: PathBuf,
    /// Who serves it: `daemon` or `ui`.
    served_by: &'static str,
    /// When it started.
    started: chrono::DateTime<chrono::Utc>,
    /// The daemon serving it, which publishes its runs' progress and takes actions; none for
    /// `tapline ui`.
    daemon: Option<DaemonLink>,
}

impl Console {
    /// Opens the console over the history at `location`, with the pipelines of `dir`.
    pub fn open(
        location: &Location,
        dir: PathBuf,
        served_by: &'static str,
    ) -> Result<Console, StateError> {
        Ok(Console {
            history: Mutex::new(crate::state::open_history(location)?),
            store: location.shown(),
            store_kind: match location {
                Location::Folder(_) => "sqlite",
                Location::Postgres(_) => "postgres",
            },
            dir,
            served_by,
            started: chrono::Utc::now(),
            daemon: None,
        })
    }

    /// The console of a daemon, which shows its state and its runs' progress, and, when it
    /// takes actions, can start runs.
    pub fn with_daemon(mut self, daemon: DaemonLink) -> Console {
        self.daemon = Some(daemon);
        self
    }

    /// Whether the console may start runs: a daemon's, with a token.
    fn takes_actions(&self) -> bool {
        self.daemon.as_ref().is_some_and(DaemonLink::takes_actions)
    }

    /// Runs `read` on the history on a blocking thread (the stores block), one at a time.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Console, &dyn History) -> T + Send + 'static,
    ) -> Result<T, Broken> {
        let console = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let history = console
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            read(&console, history.as_ref())
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "the console failed while reading");
            Broken
        })
    }
}

/// A read that failed inside tapline (a bug): the request answers 500, the server goes on.
pub(super) struct Broken;

impl IntoResponse for Broken {
    fn into_response(self) -> Response {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the console failed while reading; the log says why\n",
        )
            .into_response()
    }
}

/// The console's routes: pages at `/`, the JSON API under `/api/`, each behind the token when
/// there is one, with the console's security headers.
pub fn router(console: Arc<Console>, token: Option<Token>) -> Router {
    Router::new()
        .route("/", get(overview::overview))
        .route("/runs", get(pages::runs))
        .route("/runs/{run_id}", get(pages::run))
        .route("/runs/{run_id}/rejects", get(pages::rejects))
        .route("/pipelines/{name}", get(pages::pipeline))
        .route("/console.css", get(pages::stylesheet))
        .route("/console.js", get(pages::script))
        .route("/api/pipelines", get(api::pipelines))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{run_id}", get(api::run))
        .route("/api/running", get(api::running))
        .route("/api/status", get(api::status))
        .route("/pipelines/{name}/run", post(actions::run_now_form))
        .route("/runs/{run_id}/replay", post(actions::replay_form))
        .route("/api/pipelines/{name}/runs", post(actions::run_now))
        .route("/api/runs/{run_id}/replay", post(actions::replay))
        .with_state(console)
        .layer(axum::middleware::from_fn(auth::same_origin))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Headers on every answer: only the console's own stylesheet and images may load, no page
/// may frame it, no type is sniffed, no address leaks in a referrer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Why the console cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token.
    #[error(
        "the console would be open to the network at {0} without a token\n  hint: give --token-file FILE (every page then needs it), or listen on a loopback address such as 127.0.0.1:9464 and reach it through an SSH tunnel"
    )]
    NoToken(SocketAddr),
    /// The address cannot be listened on.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether serving the console on `address` with `token` is safe: on loopback always, elsewhere
/// only with a token.
pub fn check_exposure(address: SocketAddr, token: Option<&Token>) -> Result<(), ServeError> {
    if address.ip().is_loopback() || token.is_some() {
        Ok(())
    } else {
        Err(ServeError::NoToken(address))
    }
}

/// Serves the console alone (`tapline ui`) until the process ends; returns once it listens,
/// with the bound address.
pub async fn serve(
    address: SocketAddr,
    console: Console,
    token: Option<Token>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    check_exposure(address, token.as_ref())?;
    let listener = LimitedListener::bind(address)
        .await
        .map_err(|source| ServeError::Listen { address, source })?;
    let bound = axum::serve::Listener::local_addr(&listener)
        .map_err(|source| ServeError::Listen { address, source })?;
    let app = router(Arc::new(console), token);
    let served = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<ClientAddr>();
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the console stopped");
        }
    });
    Ok((bound, served))
}
