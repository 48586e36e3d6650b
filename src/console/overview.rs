//! The console's first page: the runs in progress (with the daemon's live progress and the
//! time left), the daemon's own state, and every pipeline of the folder with what starts it,
//! its next fires and its last run.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::{Markup, html};

use super::Console;
use super::api::{FIRES_SHOWN, Status};
use super::live::DaemonState;
use super::pages::{duration, page, status, time};
use super::views::{self, PipelineView, RunningView, Starts};

/// `GET /`: the runs in progress, the daemon, and every pipeline with its target, schedule,
/// next fires and last run.
pub(super) async fn overview(State(console): State<Arc<Console>>) -> Response {
    let shown = console
        .read(|console, history| {
            let pipelines = views::pipelines(&console.dir, history, FIRES_SHOWN);
            let running = views::running(history, console.daemon.as_ref()).unwrap_or_default();
            let status = console.status();
            let body = html! {
                (running_now(&running))
                (served_by(&console.status()))
                @if console.dir.is_dir() {
                    p.muted { "Pipeline files in " code { (console.dir.display()) } }
                } @else {
                    p.muted {
                        "No folder " code { (console.dir.display()) } ": the pipelines the history names "
                        "(give " code { "--dir" } " to list a folder of pipeline files)"
                    }
                }
                (pipelines_table(&pipelines, status.daemon.as_ref()))
            };
            page(console, "Pipelines", body)
        })
        .await;
    match shown {
        Ok(markup) => markup.into_response(),
        Err(broken) => broken.into_response(),
    }
}

/// The runs in progress with what they have settled: from the daemon's engine when it runs
/// them (with how far through its input and the time left), else as of their last
/// checkpoint. `console.js` refreshes it every two seconds from `/api/running`, and shows it
/// when a run starts.
fn running_now(runs: &[RunningView]) -> Markup {
    let now = Utc::now().timestamp_millis();
    html! {
        section #running hidden[runs.is_empty()] {
            h2 { "Running now" }
            table {
                thead { tr {
                    th { "Run" } th { "Pipeline" } th { "Trigger" } th { "Started (UTC)" } th.num { "For" }
                    th.num { "Read" } th.num { "Settled" } th.num { "Rate" } th.num { "Input read" } th.num { "Time left" }
                } }
                tbody {
                    @for view in runs {
                        @let run = &view.run;
                        @let records = view.live.as_ref().map_or(&run.end.records, |live| &live.records);
                        @let settled = records.accepted + records.skipped + records.rejected + records.failed + records.unchanged;
                        @let seconds = ((now - run.started_at_ms).max(1) as f64) / 1000.0;
                        tr {
                            td { a href={ "/runs/" (run.run_id) } { (run.run_id) } }
                            td { (run.pipeline) }
                            td { (run.trigger) }
                            td { (time(run.started_at_ms)) }
                            td.num { (format!("{seconds:.0} s")) }
                            td.num { (records.read) }
                            td.num { (settled) }
                            td.num { (format!("{:.0}/s", settled as f64 / seconds)) }
                            @match &view.live {
                                Some(live) if live.bytes_total > 0 => {
                                    td.num { (format!("{:.0}%", live.bytes_read as f64 * 100.0 / live.bytes_total as f64)) }
                                }
                                _ => { td.num.muted { "-" } }
                            }
                            td.num { (time_left(view)) }
                        }
                    }
                }
            }
        }
    }
}

/// The estimate of the time a run has left, or why there is none.
fn time_left(view: &RunningView) -> String {
    match view.live.as_ref().map(|live| live.eta_seconds) {
        Some(Some(seconds)) => format!("{seconds} s"),
        Some(None) => "estimating".into(),
        None => "-".into(),
    }
}

/// Who serves the console; for a daemon, its pipelines and the account budgets in use.
fn served_by(status: &Status) -> Markup {
    html! {
        section #served-by {
            @match &status.daemon {
                Some(daemon) => {
                    h2 { "Daemon" }
                    p {
                        (daemon.pipelines) " pipelines loaded, " (daemon.scheduled) " scheduled"
                        @if daemon.stopping { " · " span.error { "stopping: no new runs" } }
                        " · state store " (status.state_store)
                        " · actions " @if daemon.actions { "on (with the token)" } @else { "off (no token)" }
                    }
                    @if !daemon.budgets.is_empty() {
                        table {
                            thead { tr { th { "Account" } th { "API" } th.num { "Requests in flight" } th.num { "Runs' limits" } } }
                            tbody {
                                @for budget in &daemon.budgets {
                                    tr {
                                        td { (budget.account) } td { code { (budget.api) } }
                                        td.num { (budget.in_flight) " of " (budget.size) }
                                        td.num { (budget.limit) }
                                    }
                                }
                            }
                        }
                    }
                }
                None => {
                    p.muted {
                        "tapline ui over the " (status.state_store) " state store: the runs of every process that writes to it."
                    }
                }
            }
        }
    }
}

/// Every pipeline with its last run; under a daemon, what it does with each: a file that no
/// longer loads still runs in its last valid version.
fn pipelines_table(pipelines: &[PipelineView], daemon: Option<&DaemonState>) -> Markup {
    let entry = |name: &str| {
        daemon.and_then(|daemon| daemon.entries.iter().find(|entry| entry.name == name))
    };
    html! {
        @if pipelines.is_empty() { p { "No pipeline files." } }
        table {
            thead { tr {
                th { "Pipeline" } th { "Sends" } th { "Starts" } th { "Next fires" }
                th { "Last run" } th.num { "Accepted" } th { "Skipped · rejected · failed · unchanged" }
            } }
            tbody {
                @for pipeline in pipelines {
                    tr {
                        td {
                            a href={ "/pipelines/" (pipeline.name) } { (pipeline.name) }
                            @if let Some(description) = &pipeline.description {
                                div.muted { (description) }
                            }
                            @for error in &pipeline.errors { pre.error { (error) } }
                            @if let Some(entry) = entry(&pipeline.name) {
                                @if !pipeline.errors.is_empty() {
                                    div.muted {
                                        "the daemon runs its last valid version"
                                        @if let Some(at) = entry.next_fire_ms { ", next at " (time(at)) " UTC" }
                                    }
                                }
                                @if entry.queued { div.muted { "a run waits for the current one (overlap: queue)" } }
                            }
                        }
                        td { (pipeline.target.unwrap_or("-")) }
                        td { (starts(&pipeline.starts)) }
                        td {
                            @for fire in &pipeline.next_fires {
                                div { (fire.local) }
                                div.muted { (fire.utc) }
                            }
                        }
                        @match &pipeline.last_run {
                            Some(run) => {
                                @let records = &run.end.records;
                                td {
                                    a href={ "/runs/" (run.run_id) } { (status(run)) }
                                    div.muted { (time(run.started_at_ms)) " · " (duration(run)) }
                                }
                                td.num { (records.accepted) }
                                td.num {
                                    (records.skipped) " · " (records.rejected) " · "
                                    (records.failed) " · " (records.unchanged)
                                }
                            }
                            None => { td.muted { "never" } td {} td {} }
                        }
                    }
                }
            }
        }
    }
}

fn starts(starts: &Starts) -> Markup {
    html! {
        @match starts {
            Starts::Schedule { cron, words, timezone } => {
                @match words {
                    Some(words) => { (words) " (" (timezone) ")" div.muted { code { (cron) } } }
                    None => { code { (cron) } " in " (timezone) }
                }
            }
            Starts::FileArrival { pattern } => { "a file arriving at " (pattern) }
            Starts::Manual => { "only by hand (no schedule)" }
            Starts::Unknown => { "-" }
            Starts::NotHere => { span.muted { "its file is not on this machine" } }
        }
    }
}
