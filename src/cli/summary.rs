//! What `tapline run` and `tapline replay` print about a run: the summary as text or JSON,
//! and what the built-in sandbox received.

use std::io::Write;

use serde_json::{Value, json};

use super::from_working_dir;
use crate::config::Pipeline;
use crate::engine::{DryRunReport, RunSummary};
use crate::mapping;
use crate::sandbox::Sandbox;

/// ` · N unchanged` when `send: changes` left records out; nothing otherwise.
fn unchanged(counts: &crate::outcome::Counts) -> String {
    if counts.unchanged == 0 {
        String::new()
    } else {
        format!(" · {} unchanged", counts.unchanged)
    }
}

pub(super) fn summary_json(summary: &RunSummary) -> Value {
    let mut line = json!({
        "pipeline": summary.pipeline,
        "run_id": summary.run_id,
        "status": summary.status(),
        "records": summary.counts,
        "requests": summary.requests,
        "retries": summary.retries,
        "duration_ms": summary.duration.as_millis() as u64,
        "rejects_file": summary
            .rejects_file
            .as_deref()
            .map(|path| from_working_dir(path).display().to_string()),
        "stop_reason": summary.stop.as_ref().map(ToString::to_string),
        "stop_kind": summary.stop.as_ref().map(|stop| stop.kind()),
        "segment_id": summary.segment_id,
        "warnings": summary.warnings,
        "resumed_from": summary.resumed_from,
        "rows_resumed": summary.rows_resumed,
        "up_to_date": summary.up_to_date,
        "reasons": summary.reasons,
        "concurrency": summary.concurrency,
    });
    if let Some(dry_run) = &summary.dry_run {
        line["dry_run"] = serde_json::to_value(dry_run).unwrap_or(Value::Null);
    }
    line
}

/// A run's summary for a person: what happened (a dry run, up to date, or sent), then the
/// top reasons records were refused, and where the rest is.
pub(super) fn print_summary(
    out: &mut dyn Write,
    summary: &RunSummary,
    pipeline: &Pipeline,
) -> std::io::Result<()> {
    if let Some(dry_run) = &summary.dry_run {
        print_dry_run(out, summary, dry_run, pipeline)?;
    } else if let Some(delivered_by) = &summary.up_to_date {
        writeln!(
            out,
            "{}: up to date, nothing sent: run {delivered_by} already delivered this file in full ({})",
            summary.pipeline,
            if matches!(pipeline.send, crate::config::model::Send::Changes { .. }) {
                "`--full` sends every record again; `--force` only reads it again, and sends what changed"
            } else {
                "`--force` sends it again"
            }
        )?;
    } else {
        print_delivery(out, summary)?;
    }
    // The top reasons, so the rejects file need not be opened to know what is wrong.
    for (index, reason) in summary.reasons.iter().take(TOP_REASONS).enumerate() {
        let label = if index == 0 { "reasons" } else { "" };
        let records = if reason.records == 1 {
            "record"
        } else {
            "records"
        };
        writeln!(
            out,
            "  {label:<9} {} — {} {records}, e.g. line {}: {}",
            reason.code,
            thousands(reason.records),
            reason.example_line,
            reason.example
        )?;
    }
    if summary.reasons.len() > TOP_REASONS {
        writeln!(
            out,
            "            and {} more codes (all in the rejects file)",
            summary.reasons.len() - TOP_REASONS
        )?;
    }
    if let Some(segment_id) = summary.segment_id {
        writeln!(out, "  segment   {segment_id}")?;
    }
    if let Some(path) = &summary.rejects_file {
        writeln!(out, "  rejects   {}", from_working_dir(path).display())?;
    }
    if let Some(stop) = &summary.stop {
        writeln!(out, "  {stop}")?;
    }
    for warning in &summary.warnings {
        writeln!(out, "  warning: {warning}")?;
    }
    Ok(())
}

/// What a dry run would have sent, and where.
fn print_dry_run(
    out: &mut dyn Write,
    summary: &RunSummary,
    dry_run: &DryRunReport,
    pipeline: &Pipeline,
) -> std::io::Result<()> {
    let counts = &summary.counts;
    let seconds = summary.duration.as_secs_f64();
    writeln!(
        out,
        "{}: dry run, nothing was sent ({seconds:.2} s)",
        summary.pipeline
    )?;
    writeln!(
        out,
        "  records   {} read · {} would be sent{} · {} skipped · {} failed",
        counts.read,
        dry_run.records,
        unchanged(counts),
        counts.skipped,
        counts.failed
    )?;
    let path = mapping::endpoint(pipeline.target).path;
    if pipeline.custom_list.is_some() {
        // Three steps, each to its own place.
        writeln!(
            out,
            "  requests  3 through connection `{}`: {path} (an upload URL), a PUT of the list to that pre-signed URL, {}",
            pipeline.connection.name,
            crate::clevertap::wire::CUSTOM_LIST_COMPLETED_PATH
        )?;
    } else {
        writeln!(
            out,
            "  requests  {} to {path} of connection `{}`",
            dry_run.requests, pipeline.connection.name
        )?;
    }
    if let Some(sample) = &dry_run.sample {
        writeln!(out, "  first record  {sample}")?;
    }
    if !dry_run.affected.is_empty() {
        writeln!(
            out,
            "  would affect these {} (CleverTap cannot undo this):",
            dry_run.affected.len()
        )?;
        for identity in &dry_run.affected {
            writeln!(out, "    {identity}")?;
        }
    }
    Ok(())
}

/// What a run that sent did: its status, where it resumed from, its counts and rate.
fn print_delivery(out: &mut dyn Write, summary: &RunSummary) -> std::io::Result<()> {
    let counts = &summary.counts;
    let seconds = summary.duration.as_secs_f64();
    writeln!(
        out,
        "{}: {} in {seconds:.2} s",
        summary.pipeline,
        summary.status()
    )?;
    if let Some(resumed_from) = &summary.resumed_from {
        writeln!(
            out,
            "  resumed   run {resumed_from}: {} rows it had settled were not sent again (`--fresh` starts over)",
            summary.rows_resumed
        )?;
    }
    writeln!(
        out,
        "  records   {} read · {} accepted{} · {} skipped · {} rejected · {} failed",
        counts.read,
        counts.accepted,
        unchanged(counts),
        counts.skipped,
        counts.rejected,
        counts.failed
    )?;
    let rate = if seconds > 0.0 {
        counts.accepted as f64 / seconds
    } else {
        0.0
    };
    writeln!(
        out,
        "  requests  {} ({} retries) · {rate:.0} records/s",
        summary.requests, summary.retries
    )?;
    if let Some(concurrency) = summary.concurrency.filter(|seen| seen.adaptive) {
        writeln!(out, "  in flight {concurrency}")?;
    }
    Ok(())
}

/// Reasons shown in a summary.
const TOP_REASONS: usize = 5;

/// `1 request`, `2 requests`.
fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// `1204` → `1,204`.
fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// What the sandbox has received so far in this invocation, in counts.
pub(super) fn sandbox_json(sandbox: &Sandbox) -> Value {
    let seen = sandbox.inspect();
    json!({
        "requests": seen.requests,
        "profiles": seen.profiles,
        "distinct_profiles": seen.distinct_profiles,
        "events": seen.events,
        "tokens": seen.tokens,
        "demerged": seen.demerged.len(),
        "subscriptions": seen.subscriptions.len(),
        "disassociated": seen.disassociated.len(),
        "deleted": seen.deleted.len(),
        "segments": seen.segments.iter().map(|(name, segment)| (name.clone(), json!({"id": segment.id, "identities": segment.identities}))).collect::<serde_json::Map<_, _>>(),
        "rejected": seen.rejected,
        "max_in_flight": seen.max_in_flight_by_api,
    })
}

pub(super) fn print_sandbox(out: &mut dyn Write, sandbox: &Sandbox) -> std::io::Result<()> {
    let seen = sandbox.inspect();
    let mut accepted = Vec::new();
    for (count, what) in [
        (
            seen.profiles as usize,
            format!(
                "{} profiles ({} distinct)",
                seen.profiles, seen.distinct_profiles
            ),
        ),
        (seen.events as usize, format!("{} events", seen.events)),
        (
            seen.tokens as usize,
            format!("{} device tokens", seen.tokens),
        ),
        (
            seen.demerged.len(),
            format!("{} demerges", seen.demerged.len()),
        ),
        (
            seen.subscriptions.len(),
            format!("{} subscription changes", seen.subscriptions.len()),
        ),
        (
            seen.disassociated.len(),
            format!("{} phone disassociations", seen.disassociated.len()),
        ),
        (
            seen.deleted.len(),
            format!(
                "{} profile deletions ({} of profiles it held)",
                seen.deleted.len(),
                seen.deleted.iter().filter(|deleted| deleted.found).count()
            ),
        ),
    ] {
        if count > 0 {
            accepted.push(what);
        }
    }
    for (name, segment) in &seen.segments {
        accepted.push(format!(
            "custom list `{name}` as segment {} ({} {})",
            segment.id,
            segment.identities,
            if segment.identities == 1 {
                "identity"
            } else {
                "identities"
            }
        ));
    }
    let accepted = if accepted.is_empty() {
        "nothing".to_string()
    } else {
        accepted.join(", ")
    };
    let most_in_flight = seen
        .max_in_flight_by_api
        .values()
        .max()
        .copied()
        .unwrap_or(0);
    writeln!(
        out,
        "sandbox received {} and accepted {accepted}; {} rejected; at most {} in flight",
        // A custom list's upload to the pre-signed URL is one of the run's requests too.
        plural(
            seen.requests + seen.presigned_uploads.len() as u64,
            "request"
        ),
        plural(seen.rejected, "record"),
        plural(most_in_flight as u64, "request")
    )?;
    for record in seen.sample.iter().take(2) {
        writeln!(out, "  sample  {record}")?;
    }
    Ok(())
}
