//! The console's JSON API, which its pages are built on: `/api/pipelines`, `/api/runs` (with
//! `pipeline`, `status`, `limit` and `before` for the next page), `/api/runs/{run_id}`,
//! `/api/running` (with the daemon's live progress) and `/api/status`. A run has the fields
//! and names of `tapline history --json`. The actions are in [`super::actions`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::live::DaemonState;
use super::{Console, views};
use crate::outcome::RunStatus;
use crate::state::RunFilter;

/// Runs a page lists unless `limit` says otherwise, and the most it may say.
pub(super) const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// Next fires each pipeline shows.
pub(super) const FIRES_SHOWN: usize = 3;

/// The query of a runs list, as the URL has it.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RunsQuery {
    pub(super) pipeline: Option<String>,
    pub(super) status: Option<String>,
    pub(super) limit: Option<usize>,
    pub(super) before: Option<String>,
}

impl RunsQuery {
    /// The filter it asks for, or why it is not one (an unknown status).
    pub(super) fn filter(&self) -> Result<RunFilter, String> {
        let status = match self.status.as_deref().filter(|status| !status.is_empty()) {
            None => None,
            Some(word) => Some(word.parse::<RunStatus>().map_err(|_| {
                format!(
                    "unknown status `{word}`: one of running, succeeded, failed, interrupted, abandoned, up_to_date"
                )
            })?),
        };
        Ok(RunFilter {
            pipeline: self.pipeline.clone().filter(|name| !name.is_empty()),
            status,
            before: self.before.clone().filter(|run| !run.is_empty()),
            limit: self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        })
    }
}

/// A JSON error answer: `{"error": "..."}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// `GET /api/pipelines`: every pipeline file of the folder, with its next fires, its last
/// run, or why it does not load.
pub(super) async fn pipelines(State(console): State<Arc<Console>>) -> Response {
    let views = console
        .read(|console, history| views::pipelines(&console.dir, history, FIRES_SHOWN))
        .await;
    match views {
        Ok(views) => Json(views).into_response(),
        Err(broken) => broken.into_response(),
    }
}

/// `GET /api/runs`: runs newest first, filtered and paged.
pub(super) async fn runs(
    State(console): State<Arc<Console>>,
    Query(query): Query<RunsQuery>,
) -> Response {
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match console.read(move |_, history| history.runs(&filter)).await {
        Ok(Ok(runs)) => Json(runs).into_response(),
        Ok(Err(failed)) => error(StatusCode::SERVICE_UNAVAILABLE, failed.to_string()),
        Err(broken) => broken.into_response(),
    }
}

/// `GET /api/runs/{run_id}`: one run, with the reasons its records were refused.
pub(super) async fn run(
    State(console): State<Arc<Console>>,
    Path(run_id): Path<String>,
) -> Response {
    let wanted = run_id.clone();
    match console
        .read(move |_, history| views::run(history, &wanted))
        .await
    {
        Ok(Ok(Some(run))) => Json(run).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no run `{run_id}`")),
        Ok(Err(failed)) => error(StatusCode::SERVICE_UNAVAILABLE, failed.to_string()),
        Err(broken) => broken.into_response(),
    }
}

/// `GET /api/running`: the runs in progress, with how far the daemon's own are and the time
/// they have left; the overview's script refreshes its table from it.
pub(super) async fn running(State(console): State<Arc<Console>>) -> Response {
    match console
        .read(|console, history| views::running(history, console.daemon.as_ref()))
        .await
    {
        Ok(Ok(runs)) => Json(runs).into_response(),
        Ok(Err(failed)) => error(StatusCode::SERVICE_UNAVAILABLE, failed.to_string()),
        Err(broken) => broken.into_response(),
    }
}

/// Who serves the console, and the daemon's own state when a daemon does.
#[derive(Debug, serde::Serialize)]
pub(super) struct Status {
    /// `daemon` or `ui`.
    pub(super) served_by: &'static str,
    /// tapline's version.
    pub(super) version: &'static str,
    /// When the console (and its daemon) started, milliseconds since the Unix epoch.
    pub(super) up_since_ms: i64,
    /// `sqlite` or `postgres`.
    pub(super) state_store: &'static str,
    /// The daemon's pipelines, budgets and whether it takes actions.
    pub(super) daemon: Option<DaemonState>,
}

impl Console {
    pub(super) fn status(&self) -> Status {
        Status {
            served_by: self.served_by,
            version: env!("CARGO_PKG_VERSION"),
            up_since_ms: self.started.timestamp_millis(),
            state_store: self.store_kind,
            daemon: self.daemon.as_ref().map(super::DaemonLink::state),
        }
    }
}

/// `GET /api/status`.
pub(super) async fn status(State(console): State<Arc<Console>>) -> Response {
    Json(console.status()).into_response()
}
