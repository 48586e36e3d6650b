//! Prometheus metrics for `--metrics-listen` (served by [`super::listener`]): runs, records
//! by outcome, requests, retries, requests in flight per account, and the last success per
//! pipeline.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::engine::{AccountBudgets, RunSummary};
use crate::outcome::RunStatus;

/// Counters the daemon keeps. Shared with the HTTP server.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
    budgets: AccountBudgets,
}

#[derive(Default)]
struct Counters {
    /// Runs by (pipeline, status).
    runs: BTreeMap<(String, RunStatus), u64>,
    /// Records by (pipeline, outcome).
    records: BTreeMap<(String, &'static str), u64>,
    requests: BTreeMap<String, u64>,
    retries: BTreeMap<String, u64>,
    /// Unix seconds of the last successful run.
    last_success_seconds: BTreeMap<String, u64>,
    scheduled: usize,
    running: usize,
}

impl Metrics {
    /// Metrics that read requests in flight from these budgets.
    pub fn new(budgets: AccountBudgets) -> Self {
        Metrics {
            counters: Mutex::default(),
            budgets,
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Books a finished run.
    pub fn run_finished(&self, summary: &RunSummary) {
        let mut counters = self.counters();
        let pipeline = summary.pipeline.clone();
        *counters
            .runs
            .entry((pipeline.clone(), summary.status()))
            .or_default() += 1;
        let counts = summary.counts;
        for (outcome, count) in counts.by_ending() {
            *counters
                .records
                .entry((pipeline.clone(), outcome))
                .or_default() += count;
        }
        *counters.requests.entry(pipeline.clone()).or_default() += summary.requests;
        *counters.retries.entry(pipeline.clone()).or_default() += summary.retries;
        if summary.succeeded() {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            counters.last_success_seconds.insert(pipeline, now);
        }
    }

    /// Pipelines scheduled and runs going now.
    pub fn set_load(&self, scheduled: usize, running: usize) {
        let mut counters = self.counters();
        counters.scheduled = scheduled;
        counters.running = running;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let counters = self.counters();
        let mut out = String::new();
        header(
            &mut out,
            "tapline_pipelines_scheduled",
            "gauge",
            "Pipelines with a schedule.",
        );
        let _ = writeln!(out, "tapline_pipelines_scheduled {}", counters.scheduled);
        header(
            &mut out,
            "tapline_runs_in_progress",
            "gauge",
            "Runs going now.",
        );
        let _ = writeln!(out, "tapline_runs_in_progress {}", counters.running);
        header(&mut out, "tapline_runs_total", "counter", "Finished runs.");
        for ((pipeline, status), count) in &counters.runs {
            let pipeline = label(pipeline);
            let _ = writeln!(
                out,
                "tapline_runs_total{{pipeline=\"{pipeline}\",status=\"{status}\"}} {count}"
            );
        }
        header(
            &mut out,
            "tapline_records_total",
            "counter",
            "Records by outcome.",
        );
        for ((pipeline, outcome), count) in &counters.records {
            let pipeline = label(pipeline);
            let _ = writeln!(
                out,
                "tapline_records_total{{pipeline=\"{pipeline}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        for (name, kind, help, values) in [
            (
                "tapline_requests_total",
                "counter",
                "HTTP requests to CleverTap, retries included.",
                &counters.requests,
            ),
            (
                "tapline_retries_total",
                "counter",
                "Retried requests.",
                &counters.retries,
            ),
            (
                "tapline_last_success_timestamp_seconds",
                "gauge",
                "When the pipeline last succeeded (Unix seconds).",
                &counters.last_success_seconds,
            ),
        ] {
            header(&mut out, name, kind, help);
            for (pipeline, value) in values {
                let _ = writeln!(out, "{name}{{pipeline=\"{}\"}} {value}", label(pipeline));
            }
        }
        self.render_accounts(&mut out);
        out
    }

    /// The gauges of each account and API: requests in flight, and the runs' limits.
    fn render_accounts(&self, out: &mut String) {
        let budgets = self.budgets.in_flight();
        header(
            out,
            "tapline_requests_in_flight",
            "gauge",
            "Requests in flight per CleverTap account and API.",
        );
        for budget in &budgets {
            let _ = writeln!(
                out,
                "tapline_requests_in_flight{{account=\"{}\"}} {}",
                label(&format!("{} {}", budget.account, budget.api)),
                budget.in_flight
            );
        }
        header(
            out,
            "tapline_concurrency_limit",
            "gauge",
            "The limits of requests in flight of the runs on each CleverTap account and API, added up (thread_count, or where auto has it).",
        );
        for budget in &budgets {
            let _ = writeln!(
                out,
                "tapline_concurrency_limit{{account=\"{}\",api=\"{}\"}} {}",
                label(&budget.account),
                label(budget.api),
                budget.limit
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
