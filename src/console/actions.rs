//! The console's actions, the daemon's only and only with a token: run a pipeline now, and
//! replay a run's rejects. Both go to the daemon, which starts them as it starts a fire (the
//! pipeline's lock, the account budgets, its overlap rule) and answers once the run has begun.
//!
//! `POST /api/pipelines/{name}/runs` and `POST /api/runs/{run_id}/replay` answer JSON: the
//! HTTP trigger an orchestrator calls after its upstream job. The pages' buttons post to
//! `/pipelines/{name}/run` and `/runs/{run_id}/replay` and are sent on to the run's page.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::api::error;
use super::live::{Action, Answer, Refusal};
use super::{Console, pages};

/// What came of an action, before it is said as JSON or as a page.
enum Outcome {
    Answered(Answer),
    /// The run to replay is not in the history.
    NoSuchRun(String),
    /// The history cannot be read.
    Unreadable(String),
}

impl Console {
    /// Asks the daemon serving the console, if any, to start `action`.
    async fn ask(&self, action: Action) -> Answer {
        match &self.daemon {
            Some(daemon) => daemon.ask(action).await,
            None => Answer::Refused(Refusal::NotRunnable(
                "`tapline ui` only reads: start runs from the daemon's console, or with `tapline run`"
                    .into(),
            )),
        }
    }
}

async fn run_now_outcome(console: &Console, pipeline: String) -> Outcome {
    let answer = console.ask(Action::RunNow { pipeline }).await;
    tracing::info!(?answer, "the console asked for a run");
    Outcome::Answered(answer)
}

async fn replay_outcome(console: &Arc<Console>, run_id: String) -> Outcome {
    let wanted = run_id.clone();
    let found = console.read(move |_, history| history.run(&wanted)).await;
    let run = match found {
        Ok(Ok(Some(run))) => run,
        Ok(Ok(None)) => return Outcome::NoSuchRun(run_id),
        Ok(Err(failed)) => return Outcome::Unreadable(failed.to_string()),
        Err(_) => return Outcome::Unreadable("the console failed while reading".into()),
    };
    let Some(rejects_file) = run.end.rejects_file else {
        return Outcome::Answered(Answer::Refused(Refusal::NotRunnable(format!(
            "run `{run_id}` has no rejects file: nothing of it was refused"
        ))));
    };
    let answer = console
        .ask(Action::Replay {
            pipeline: run.pipeline,
            rejects_file,
        })
        .await;
    tracing::info!(
        run_id,
        ?answer,
        "the console asked to replay a run's rejects"
    );
    Outcome::Answered(answer)
}

/// The HTTP status a refusal answers with.
fn refusal_status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::NoToken => StatusCode::FORBIDDEN,
        Refusal::UnknownPipeline(_) => StatusCode::NOT_FOUND,
        Refusal::NotRunnable(_) | Refusal::Busy(_) | Refusal::NotStarted(_) => StatusCode::CONFLICT,
        Refusal::Stopping => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The outcome as the JSON API says it: 201 with the run ID (and its URL in `Location`),
/// 202 when queued, else the status of the refusal with `{"error": ...}`.
fn as_json(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Answered(Answer::Started { run_id }) => {
            let url = format!("/api/runs/{run_id}");
            (
                StatusCode::CREATED,
                [(header::LOCATION, url.clone())],
                Json(serde_json::json!({ "status": "started", "run_id": run_id, "url": url })),
            )
                .into_response()
        }
        Outcome::Answered(Answer::Queued) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "status": "queued",
                "reason": "the pipeline is running and queues what comes meanwhile (overlap: queue); it runs when that run ends"
            })),
        )
            .into_response(),
        Outcome::Answered(Answer::Refused(refusal)) => {
            error(refusal_status(&refusal), refusal.to_string())
        }
        Outcome::NoSuchRun(run_id) => error(StatusCode::NOT_FOUND, format!("no run `{run_id}`")),
        Outcome::Unreadable(reason) => error(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// The outcome as a browser is shown it: the run's page once it has begun, else a page that
/// says why not.
fn as_page(console: &Console, outcome: Outcome) -> Response {
    let (status, title, message) = match outcome {
        Outcome::Answered(Answer::Started { run_id }) => {
            return Redirect::to(&format!("/runs/{run_id}")).into_response();
        }
        Outcome::Answered(Answer::Queued) => (
            StatusCode::ACCEPTED,
            "Queued",
            "The pipeline is running; with `overlap: queue` the run starts when that one ends."
                .to_string(),
        ),
        Outcome::Answered(Answer::Refused(refusal)) => {
            (refusal_status(&refusal), "Not started", refusal.to_string())
        }
        Outcome::NoSuchRun(run_id) => (
            StatusCode::NOT_FOUND,
            "Not started",
            format!("There is no run `{run_id}`."),
        ),
        Outcome::Unreadable(reason) => (StatusCode::SERVICE_UNAVAILABLE, "Not started", reason),
    };
    let body = html! { p.error { (message) } p { a href="/" { "Back to the pipelines" } } };
    (status, pages::page(console, title, body)).into_response()
}

/// `POST /api/pipelines/{name}/runs`: runs the pipeline now.
pub(super) async fn run_now(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Response {
    as_json(run_now_outcome(&console, name).await)
}

/// `POST /api/runs/{run_id}/replay`: sends the run's rejects again through its pipeline.
pub(super) async fn replay(
    State(console): State<Arc<Console>>,
    Path(run_id): Path<String>,
) -> Response {
    as_json(replay_outcome(&console, run_id).await)
}

/// `POST /pipelines/{name}/run`: the pipeline page's "Run now".
pub(super) async fn run_now_form(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Response {
    let outcome = run_now_outcome(&console, name).await;
    as_page(&console, outcome)
}

/// `POST /runs/{run_id}/replay`: the run page's "Replay the rejects".
pub(super) async fn replay_form(
    State(console): State<Arc<Console>>,
    Path(run_id): Path<String>,
) -> Response {
    let outcome = replay_outcome(&console, run_id).await;
    as_page(&console, outcome)
}
