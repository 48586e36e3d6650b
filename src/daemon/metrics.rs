//! Prometheus metrics and `/health` (see [`super::health`]) for `--metrics-listen`: runs,
//! records by outcome, requests, retries, requests in flight per account, and the last
//! success per pipeline.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::get;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::health::Health;
use crate::engine::{AccountBudgets, RunSummary};

/// Counters the daemon keeps. Shared with the HTTP server.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
    budgets: AccountBudgets,
}

#[derive(Default)]
struct Counters {
    /// Runs by (pipeline, status).
    runs: BTreeMap<(String, &'static str), u64>,
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
            .entry((pipeline.clone(), summary.status().as_str()))
            .or_default() += 1;
        let counts = summary.counts;
        for (outcome, count) in [
            ("accepted", counts.accepted),
            ("skipped", counts.skipped),
            ("rejected", counts.rejected),
            ("failed", counts.failed),
            ("unchanged", counts.unchanged),
        ] {
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
        header(
            &mut out,
            "tapline_requests_in_flight",
            "gauge",
            "Requests in flight per CleverTap account and API.",
        );
        for (account, in_flight) in self.budgets.in_flight() {
            let _ = writeln!(
                out,
                "tapline_requests_in_flight{{account=\"{}\"}} {in_flight}",
                label(&account)
            );
        }
        out
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

/// Serves `/metrics` and `/health` on `address` until the process ends.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let listener = LimitedListener {
        inner: listener,
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
    };
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
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    Ok(bound)
}

/// Connections the metrics server holds at most: a scraper needs one or two. More are
/// closed as they come, so idle or half-open connections cannot take the file descriptors
/// the daemon's runs need (its state store, its sources, its requests).
const MAX_CONNECTIONS: usize = 32;

/// A connection that sends nothing for this long is closed (a request's headers included).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener that holds at most [`MAX_CONNECTIONS`] connections, each closed after
/// [`IDLE_TIMEOUT`] without a byte from the client.
struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl axum::serve::Listener for LimitedListener {
    type Io = IdleLimited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => {
                    return (
                        IdleLimited {
                            stream,
                            _slot: slot,
                            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
                        },
                        address,
                    );
                }
                Err(_) => {
                    tracing::warn!(%address, "metrics: too many connections; closing a new one");
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A metrics connection: it holds a slot of the listener, and reading from it fails once
/// the client has sent nothing for [`IDLE_TIMEOUT`] (then the server closes it).
struct IdleLimited {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl AsyncRead for IdleLimited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(context, buffer) {
            Poll::Ready(result) => {
                let deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                self.idle.as_mut().reset(deadline);
                Poll::Ready(result)
            }
            Poll::Pending => match self.idle.as_mut().poll(context) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client sent nothing for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for IdleLimited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}
