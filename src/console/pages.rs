//! The console's pages, written on the server with maud: every text from a file, a source
//! row or CleverTap is escaped by the template itself. They read what the JSON API reads
//! ([`super::views`]) and are readable without any script.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};

use crate::listener::ClientAddr;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::api::RunsQuery;
use super::views;
use super::{Console, chart};
use crate::state::{RunEntry, RunFilter};

/// The console's stylesheet and its one script, compiled in.
const STYLESHEET: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

/// `GET /console.js`: keeps the runs in progress current on the overview.
pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// `GET /console.css`.
pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// A page: the header with the console's links, then `body`.
pub(super) fn page(console: &Console, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tapline" }
                link rel="stylesheet" href="/console.css";
                script src="/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "tapline" }
                    nav { a href="/" { "Pipelines" } a href="/runs" { "Runs" } }
                    span.muted {
                        "served by " (console.served_by) " · tapline " (env!("CARGO_PKG_VERSION"))
                        " · up since " (console.started.format("%Y-%m-%d %H:%M UTC"))
                        " · state " (console.store)
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page that says what went wrong, with its status.
fn problem(console: &Console, status: StatusCode, message: &str) -> Response {
    (
        status,
        page(console, "Not here", html! { p.error { (message) } }),
    )
        .into_response()
}

/// `GET /runs`: runs newest first, filtered by pipeline and status, a page at a time.
pub(super) async fn runs(
    State(console): State<Arc<Console>>,
    Query(query): Query<RunsQuery>,
) -> Response {
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(message) => return problem(&console, StatusCode::BAD_REQUEST, &message),
    };
    let shown = console
        .read(move |console, history| {
            let runs = match history.runs(&filter) {
                Ok(runs) => runs,
                Err(error) => {
                    return problem(console, StatusCode::SERVICE_UNAVAILABLE, &error.to_string());
                }
            };
            let next = (runs.len() == filter.limit)
                .then(|| runs.last().map(|run| run.run_id.clone()))
                .flatten();
            let body = html! {
                form method="get" action="/runs" {
                    label { "Pipeline " input name="pipeline" value=(filter.pipeline.clone().unwrap_or_default()); }
                    label { "Status "
                        select name="status" {
                            option value="" { "any" }
                            @for word in ["running", "succeeded", "failed", "interrupted", "abandoned", "up_to_date"] {
                                option value=(word) selected[filter.status.is_some_and(|s| s.as_str() == word)] { (word) }
                            }
                        }
                    }
                    button type="submit" { "Show" }
                }
                (runs_table(&runs))
                @if let Some(last) = next {
                    a.next href={ "/runs?" (next_page(&filter, &last)) } { "Older runs →" }
                }
            };
            page(console, "Runs", body).into_response()
        })
        .await;
    shown.unwrap_or_else(IntoResponse::into_response)
}

/// The query string of the page after `last` under the same filter.
fn next_page(filter: &RunFilter, last: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(pipeline) = &filter.pipeline {
        query.append_pair("pipeline", pipeline);
    }
    if let Some(status) = filter.status {
        query.append_pair("status", status.as_str());
    }
    query.append_pair("limit", &filter.limit.to_string());
    query.append_pair("before", last);
    query.finish()
}

fn runs_table(runs: &[RunEntry]) -> Markup {
    html! {
        @if runs.is_empty() { p { "No runs." } }
        @else {
            table {
                thead { tr {
                    th { "Run" } th { "Pipeline" } th { "Trigger" } th { "Started (UTC)" }
                    th.num { "Duration" } th { "Status" } th.num { "Read" } th.num { "Accepted" }
                    th.num { "Skipped" } th.num { "Rejected" } th.num { "Failed" } th.num { "Unchanged" }
                } }
                tbody {
                    @for run in runs {
                        @let records = &run.end.records;
                        tr {
                            td { a href={ "/runs/" (run.run_id) } { (run.run_id) } }
                            td { a href={ "/pipelines/" (run.pipeline) } { (run.pipeline) } }
                            td { (run.trigger) }
                            td { (time(run.started_at_ms)) }
                            td.num { (duration(run)) }
                            td { (status(run)) }
                            td.num { (records.read) } td.num { (records.accepted) }
                            td.num { (records.skipped) } td.num { (records.rejected) }
                            td.num { (records.failed) } td.num { (records.unchanged) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /runs/{run_id}`: one run in full, with the reasons its records were refused.
pub(super) async fn run(
    State(console): State<Arc<Console>>,
    Path(run_id): Path<String>,
) -> Response {
    let shown = console
        .read(move |console, history| match views::run(history, &run_id) {
            Ok(Some(view)) => page(
                console,
                &format!("Run {run_id}"),
                run_body(&view, console.takes_actions()),
            )
            .into_response(),
            Ok(None) => problem(
                console,
                StatusCode::NOT_FOUND,
                &format!("No run `{run_id}` in the history."),
            ),
            Err(error) => problem(console, StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
        })
        .await;
    shown.unwrap_or_else(IntoResponse::into_response)
}

fn run_body(view: &views::RunView, actions: bool) -> Markup {
    let entry = &view.run;
    let run = &entry.end;
    let records = &run.records;
    html! {
        dl {
            dt { "Pipeline" } dd { a href={ "/pipelines/" (entry.pipeline) } { (entry.pipeline) } " (" (entry.pipeline_file.display()) ")" }
            dt { "Status" } dd { (status(entry)) }
            dt { "Trigger" } dd {
                (entry.trigger)
                @if let Some(fire) = entry.scheduled_for_ms { ", the fire of " (time(fire)) " UTC" }
            }
            dt { "Started" } dd { (time(entry.started_at_ms)) " UTC, took " (duration(entry)) }
            @if let Some(runner) = &entry.runner { dt { "Ran in" } dd { (runner) " (host:pid)" } }
            @if let Some(destination) = &entry.destination { dt { "Sent to" } dd { (destination) } }
            dt { "Records" } dd {
                (records.read) " read · " (records.accepted) " accepted · " (records.unchanged) " unchanged · "
                (records.skipped) " skipped · " (records.rejected) " rejected · " (records.failed) " failed"
            }
            dt { "Requests" } dd { (run.requests) " (" (run.retries) " retries)" }
            @if let Some(concurrency) = &run.concurrency { dt { "In flight" } dd { (concurrency) } }
            @if let Some(from) = &run.resumed_from {
                dt { "Resumed" } dd { "from run " a href={ "/runs/" (from) } { (from) } " (" (run.rows_resumed) " rows already settled)" }
            }
            @if let Some(reason) = &run.stop_reason {
                dt { "Stopped" } dd.error {
                    (reason)
                    @if let Some(kind) = run.stop_kind { " " code { (kind.as_str()) } }
                }
            }
            @for warning in &run.warnings { dt { "Warning" } dd { (warning) } }
        }
        @if !view.reasons.is_empty() {
            h2 { "Why records were refused" }
            table {
                thead { tr { th { "Code" } th { "Outcome" } th.num { "Records" } th { "Reason" } th { "Example" } } }
                tbody {
                    @for reason in &view.reasons {
                        tr {
                            td { code { (reason.code) } }
                            td { (reason.outcome) }
                            td.num { (reason.count) }
                            td { (reason.reason) }
                            td {
                                "line " (reason.example_line)
                                @if let Some(example) = &reason.example { pre { (example) } }
                            }
                        }
                    }
                }
            }
        } @else if !run.first_errors.is_empty() {
            h2 { "First errors" }
            ul { @for error in &run.first_errors { li { "line " (error.line) ": " code { (error.code) } " " (error.reason) } } }
        }
        @if run.rejects_file.is_some() {
            p { a href={ "/runs/" (entry.run_id) "/rejects" } download { "Download the rejects file" }
                " (JSON Lines; fix the records, then " code { "tapline replay FILE" } ")" }
            @if actions {
                form.action method="post" action={ "/runs/" (entry.run_id) "/replay" } {
                    button type="submit" { "Replay the rejects" }
                    " sends the records of this file again through " (entry.pipeline) ", as the daemon runs it"
                }
            }
        }
    }
}

/// `GET /runs/{run_id}/rejects`: the run's rejects file, logged with who asked (it holds
/// customer data).
pub(super) async fn rejects(
    State(console): State<Arc<Console>>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    Path(run_id): Path<String>,
) -> Response {
    let wanted = run_id.clone();
    let file = match console.read(move |_, history| history.run(&wanted)).await {
        Ok(Ok(Some(run))) => run.end.rejects_file,
        Ok(Ok(None)) => None,
        Ok(Err(error)) => {
            return problem(
                &console,
                StatusCode::SERVICE_UNAVAILABLE,
                &error.to_string(),
            );
        }
        Err(broken) => return broken.into_response(),
    };
    let Some(path) = file else {
        return problem(
            &console,
            StatusCode::NOT_FOUND,
            &format!("Run `{run_id}` has no rejects file."),
        );
    };
    let opened = match tokio::fs::File::open(&path).await {
        Ok(opened) => opened,
        Err(error) => {
            return problem(
                &console,
                StatusCode::NOT_FOUND,
                &format!(
                    "The rejects file of run `{run_id}` cannot be read: {error} (pruned with the history, or on another machine)"
                ),
            );
        }
    };
    let length = match opened.metadata().await {
        Ok(metadata) => metadata.len(),
        Err(error) => {
            return problem(
                &console,
                StatusCode::NOT_FOUND,
                &format!("The rejects file of run `{run_id}` cannot be read: {error}"),
            );
        }
    };
    tracing::info!(%client, run_id, file = %path.display(), "the console sent a rejects file");
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().replace('"', ""))
        .unwrap_or_else(|| "rejects.jsonl".into());
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        // Only the length announced: a file still growing is cut there.
        Body::from_stream(tokio_util::io::ReaderStream::new(
            tokio::io::AsyncReadExt::take(opened, length),
        )),
    )
        .into_response()
}

/// `GET /pipelines/{name}`: one pipeline's settings, next five fires and runs over time.
pub(super) async fn pipeline(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Response {
    let shown = console
        .read(move |console, history| {
            let Some(pipeline) = views::pipeline(&console.dir, &name, history) else {
                return problem(
                    console,
                    StatusCode::NOT_FOUND,
                    &format!("No pipeline `{name}` loads from {} (the overview shows why a file does not).", console.dir.display()),
                );
            };
            let runs = history
                .runs(&RunFilter::newest(Some(&name), 50))
                .unwrap_or_default();
            let fires = views::next_fires(&pipeline, 5);
            let body = html! {
                @if let Some(description) = &pipeline.description { p { (description) } }
                @if console.takes_actions() {
                    form.action method="post" action={ "/pipelines/" (pipeline.name) "/run" } {
                        button type="submit" { "Run now" }
                        " through the daemon, as a fire of its schedule would (its lock, account budget and overlap rule)"
                    }
                }
                h2 { "Settings" }
                dl { @for (key, value) in views::settings(&pipeline) { dt { (key) } dd { (value) } } }
                h2 { "Next fires" }
                @if fires.is_empty() { p.muted { "No schedule." } }
                ul { @for fire in &fires { li { (fire.local) " · " span.muted { (fire.utc) } } } }
                h2 { "Runs over time" }
                (chart::runs(&runs))
                p { a href={ "/runs?pipeline=" (name) } { "Every run of " (name) " →" } }
            };
            page(console, &pipeline.name, body).into_response()
        })
        .await;
    shown.unwrap_or_else(IntoResponse::into_response)
}

pub(super) fn status(run: &RunEntry) -> Markup {
    let word = run.end.status.as_str();
    html! { span class={ "status " (word) } { (word) } }
}

pub(super) fn time(ms: i64) -> String {
    crate::state::utc_time(ms)
}

pub(super) fn duration(run: &RunEntry) -> String {
    run.took().unwrap_or_else(|| "running".into())
}
