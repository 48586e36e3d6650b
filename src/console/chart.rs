//! A pipeline's runs over time as an SVG drawn here (no script, nothing fetched): records
//! accepted and refused per run as stacked bars, oldest on the left, and each run's duration
//! as a line on its own scale.

use maud::{Markup, html};

use crate::state::RunEntry;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const MARGIN: f64 = 24.0;

/// The chart of `runs` (newest first, as the history gives them).
pub(super) fn runs(runs: &[RunEntry]) -> Markup {
    if runs.is_empty() {
        return html! { p.muted { "No runs yet." } };
    }
    let oldest_first: Vec<&RunEntry> = runs.iter().rev().collect();
    let refused = |run: &RunEntry| {
        let records = &run.end.records;
        records.skipped + records.rejected + records.failed
    };
    let most = oldest_first
        .iter()
        .map(|run| run.end.records.accepted + refused(run))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let seconds = |run: &RunEntry| {
        run.finished_at_ms
            .map(|end| (end - run.started_at_ms).max(0) as f64 / 1000.0)
    };
    let longest = oldest_first
        .iter()
        .filter_map(|run| seconds(run))
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let plot = HEIGHT - 2.0 * MARGIN;
    let slot = (WIDTH - 2.0 * MARGIN) / oldest_first.len() as f64;
    let bar = (slot * 0.7).max(1.0);
    let duration_points: Vec<String> = oldest_first
        .iter()
        .enumerate()
        .filter_map(|(at, run)| {
            let x = MARGIN + slot * (at as f64 + 0.5);
            seconds(run).map(|s| format!("{x:.1},{:.1}", MARGIN + plot * (1.0 - s / longest)))
        })
        .collect();
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
            aria-label="records accepted and refused per run, and each run's duration" {
            line x1=(MARGIN) y1=(HEIGHT - MARGIN) x2=(WIDTH - MARGIN) y2=(HEIGHT - MARGIN)
                stroke="#888" {}
            @for (at, run) in oldest_first.iter().enumerate() {
                @let x = MARGIN + slot * at as f64 + (slot - bar) / 2.0;
                @let accepted = plot * run.end.records.accepted as f64 / most;
                @let refused_height = plot * refused(run) as f64 / most;
                @let base = HEIGHT - MARGIN;
                g {
                    title {
                        (run.run_id) ": " (run.end.records.accepted) " accepted, "
                        (refused(run)) " refused"
                        @if let Some(s) = seconds(run) { ", " (format!("{s:.1}")) " s" }
                    }
                    rect x=(format!("{x:.1}")) y=(format!("{:.1}", base - accepted))
                        width=(format!("{bar:.1}")) height=(format!("{accepted:.1}"))
                        fill="#2e7d32" {}
                    rect x=(format!("{x:.1}")) y=(format!("{:.1}", base - accepted - refused_height))
                        width=(format!("{bar:.1}")) height=(format!("{refused_height:.1}"))
                        fill="#c62828" {}
                }
            }
            @if duration_points.len() > 1 {
                polyline points=(duration_points.join(" ")) fill="none" stroke="#1565c0"
                    stroke-width="2" {}
            }
            text x=(MARGIN) y="14" font-size="11" fill="#555" {
                "records (max " (most as u64) ")  ·  duration (blue, max "
                (format!("{longest:.1}")) " s)"
            }
        }
    }
}
