//! The one read loop both upload paths share (batches of records, and a custom list's
//! spool): the source's rows, those an earlier run settled left out, each through the
//! output mapping; a row that cannot be read or mapped comes out as a skipped record with
//! its reason, for the caller to skip or stop at as the pipeline says.

use std::sync::Arc;

use serde_json::Value;

use crate::config::model::OutputMapping;
use crate::mapping::Invalid;
use crate::mapping::output::OutputPlan;
use crate::outcome::{Carried, Code, Outcome, Settled, SettledCursor, SettledLines};
use crate::source::{Row, RowError, RowStream};
use crate::template::RunContext;

/// A source's rows as the engine reads them.
pub(super) struct SourceRows<'s> {
    rows: Box<dyn RowStream>,
    already_settled: SettledCursor<'s>,
    /// The output mapping's plan for this run, and the row it maps into (reused).
    output: Option<(OutputPlan, Row)>,
    /// The row read last (reused).
    row: Row,
    /// Rows left out because an earlier run settled them.
    pub(super) left_out: u64,
}

/// One step of the read.
pub(super) enum Read<'r> {
    /// A row to send: the source row, and what the output mapping made of it (the source
    /// row itself without a mapping, and for a record replayed from a rejects file, which
    /// is sent as it was).
    Row {
        /// The row as the source has it.
        source: &'r Row,
        /// The row to send.
        mapped: &'r Row,
    },
    /// A row that cannot be read or mapped, as a skipped record with its reason.
    Invalid(Settled),
    /// The source cannot be read further.
    Fatal(String),
}

/// No settled lines: a run that resumes nothing.
static NOTHING_SETTLED: SettledLines = SettledLines::EMPTY;

impl<'s> SourceRows<'s> {
    /// Reads `rows`, leaving out the lines in `already_settled`, through `output`.
    pub(super) fn new(
        rows: Box<dyn RowStream>,
        already_settled: Option<&'s SettledLines>,
        output: Option<Arc<OutputMapping>>,
        context: &RunContext,
    ) -> Self {
        SourceRows {
            rows,
            already_settled: already_settled.unwrap_or(&NOTHING_SETTLED).cursor(),
            output: output.map(|mapping| (OutputPlan::new(mapping, context), Row::default())),
            row: Row::default(),
            left_out: 0,
        }
    }

    /// The next row to send, or the next problem; `None` at the end of the source.
    pub(super) fn next(&mut self) -> Option<Read<'_>> {
        loop {
            let next = self.rows.read_row(&mut self.row)?;
            let line = match &next {
                Ok(()) => self.row.line,
                Err(RowError::Invalid { line, .. }) => *line,
                Err(RowError::Fatal(_)) => 0,
            };
            if line > 0 && self.already_settled.contains(line) {
                self.left_out += 1;
                continue;
            }
            return Some(match next {
                Ok(()) => match &mut self.output {
                    Some((plan, mapped)) if self.row.record.is_none() => {
                        match plan.apply(&self.row, mapped) {
                            Ok(()) => Read::Row {
                                source: &self.row,
                                mapped,
                            },
                            Err(invalid) => Read::Invalid(skipped(&self.row, invalid)),
                        }
                    }
                    _ => Read::Row {
                        source: &self.row,
                        mapped: &self.row,
                    },
                },
                Err(RowError::Invalid { line, reason, raw }) => Read::Invalid(Settled {
                    line,
                    outcome: Outcome::Skipped,
                    code: Code::MalformedRow,
                    reason,
                    carried: Carried::row(Value::String(raw)),
                }),
                Err(RowError::Fatal(message)) => Read::Fatal(message),
            });
        }
    }
}

/// A source row that cannot become a record, as a skipped record carrying the row.
pub(super) fn skipped(row: &Row, invalid: Invalid) -> Settled {
    Settled {
        line: row.line,
        outcome: Outcome::Skipped,
        code: invalid.code,
        reason: invalid.reason,
        carried: Carried::row(row.to_json()),
    }
}
