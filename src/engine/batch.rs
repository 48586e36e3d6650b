//! Rows → records → batches: the reading side of a run, on its own thread.
//!
//! Reading and mapping are blocking work, so they run on a thread that hands finished
//! batches to the sending side over a bounded channel ([`Handoff`]): the file is read only
//! as fast as batches are sent, and memory holds a few batches, whatever the file's size.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::read::{Read, SourceRows, skipped};
use super::unchanged::{ChangeFilter, Judgement};
use crate::changes::RecordFingerprint;
use crate::clevertap::wire::Envelope;
use crate::config::model::{AccountLimits, OnInvalidRecord, OutputMapping, Target};
use crate::mapping::replay::Replayed;
use crate::mapping::{self, Mapper, Record};
use crate::outcome::{Outcome, Settled, SettledLines};
use crate::source::{Row, RowStream};
use crate::template::RunContext;

/// Records in one request, already encoded as the request body.
#[derive(Debug, Clone)]
pub struct Batch {
    /// 0-based batch number in the run.
    pub index: u64,
    /// The source line of each record, in request order.
    pub lines: Vec<u64>,
    /// The request body: `{"d":[record,...]}`.
    pub body: Bytes,
    /// Where each record sits in `body`.
    pub spans: Vec<Range<usize>>,
    /// For a body by key (profile deletion): the key its values are listed under; each
    /// record is then `{key: value}`.
    pub key: Option<&'static str>,
    /// With `send: changes`, each record's fingerprint (`None`: the record has none, as an
    /// event without `ts`); empty without change detection.
    pub fingerprints: Vec<Option<RecordFingerprint>>,
}

impl Batch {
    /// First source line in the batch.
    pub fn first_line(&self) -> u64 {
        self.lines.first().copied().unwrap_or_default()
    }

    /// Last source line in the batch.
    pub fn last_line(&self) -> u64 {
        self.lines.last().copied().unwrap_or_default()
    }

    /// The record at `index` as sent.
    pub fn record(&self, index: usize) -> Option<Value> {
        let span = self.spans.get(index)?;
        let value: Value = serde_json::from_slice(&self.body[span.clone()]).ok()?;
        Some(match self.key {
            Some(key) => serde_json::json!({ key: value }),
            None => value,
        })
    }
}

/// What the reading side tells the sending side, in source order.
#[derive(Debug)]
pub enum Produced {
    /// A batch to send.
    Batch(Batch),
    /// An invalid row that was skipped.
    Skipped(Settled),
    /// Lines whose records CleverTap has already (`send: changes`), as inclusive ranges.
    Unchanged(Vec<(u64, u64)>),
    /// An invalid row that stops the run; nothing follows it.
    Stopped(Settled),
    /// The source cannot be read any further; nothing follows.
    SourceFailed(String),
}

/// Settings of the reading side.
pub struct Batching {
    /// The account's limits on records.
    pub limits: AccountLimits,
    /// What the rows become.
    pub target: Target,
    /// What an invalid row does.
    pub on_invalid_record: OnInvalidRecord,
    /// Records per request at most.
    pub batch_size: usize,
    /// How a request body holds its records.
    pub envelope: Envelope,
    /// The output mapping, applied to each row before it becomes a record.
    pub output: Option<Arc<OutputMapping>>,
    /// What templates of the output mapping may refer to.
    pub context: RunContext,
    /// Lines an earlier run settled: read, but left out.
    pub already_settled: Option<Arc<SettledLines>>,
}

/// Hands what the reader makes to the sending side.
///
/// When the channel is full, the reader waits until there is room for `burst` messages and
/// then fills it in one go, instead of waking up for every batch the sending side takes:
/// at 10 requests in flight and 200 ms per request, waking for each batch cost a tenth of
/// the run's CPU time (cold caches and a thread switch every 20 ms).
pub struct Handoff<'a> {
    channel: &'a mpsc::Sender<Produced>,
    /// Waits for room; the reader is a plain thread, outside the runtime.
    runtime: tokio::runtime::Handle,
    burst: usize,
    reserved: Option<mpsc::PermitIterator<'a, Produced>>,
}

impl<'a> Handoff<'a> {
    /// Sends into `channel`, waiting for room for `burst` messages (at most the channel's
    /// capacity) whenever it is full.
    pub fn new(
        channel: &'a mpsc::Sender<Produced>,
        runtime: tokio::runtime::Handle,
        burst: usize,
    ) -> Self {
        Handoff {
            channel,
            runtime,
            burst: burst.clamp(1, channel.max_capacity()),
            reserved: None,
        }
    }

    /// Sends a message; `false` when the sending side is gone.
    fn send(&mut self, message: Produced) -> bool {
        loop {
            if let Some(slot) = self.reserved.as_mut().and_then(Iterator::next) {
                slot.send(message);
                return true;
            }
            match self.runtime.block_on(self.channel.reserve_many(self.burst)) {
                Ok(slots) => self.reserved = Some(slots),
                Err(_) => return false,
            }
        }
    }

    /// Sends the builder's batches, full or not; `false` when the sending side is gone.
    fn flush(&mut self, builder: &mut BatchBuilder) -> bool {
        while let Some(batch) = builder.take() {
            if !self.send(Produced::Batch(batch)) {
                return false;
            }
        }
        true
    }

    /// Hands over the unchanged lines the filter noted; `false` when the sending side is gone.
    fn hand_unchanged(&mut self, filter: &mut ChangeFilter) -> bool {
        match filter.take_unchanged() {
            Some(ranges) => self.send(Produced::Unchanged(ranges)),
            None => true,
        }
    }

    /// [`Handoff::hand_unchanged`], when there is a filter.
    fn hand_all_unchanged(&mut self, changes: &mut Option<ChangeFilter>) -> bool {
        changes
            .as_mut()
            .is_none_or(|filter| self.hand_unchanged(filter))
    }

    /// Sends the builder's finished batches; `false` when the sending side is gone.
    fn send_finished(&mut self, builder: &mut BatchBuilder) -> bool {
        while let Some(batch) = builder.take_finished() {
            if !self.send(Produced::Batch(batch)) {
                return false;
            }
        }
        true
    }
}

/// What the reading side reports when it is done.
#[derive(Debug, Default)]
pub struct ReadEnd {
    /// Rows left out as already settled by an earlier run.
    pub left_out: u64,
    /// What the mapper noticed of the records (for the summary's warnings).
    pub notes: mapping::Notes,
}

/// Reads every row, maps it, and sends batches and invalid rows to the sending side until
/// the source ends, an invalid row stops the run, or the sending side is gone.
pub fn produce(
    rows: Box<dyn RowStream>,
    settings: &Batching,
    changes: Option<ChangeFilter>,
    output: &mut Handoff<'_>,
) -> ReadEnd {
    let mut mapper =
        Mapper::for_account(settings.target, settings.limits, settings.context.timezone);
    let left_out = read_all(rows, settings, changes, output, &mut mapper);
    ReadEnd {
        left_out,
        notes: mapper.notes().clone(),
    }
}

/// [`produce`]'s loop; returns how many rows were left out as already settled.
fn read_all(
    rows: Box<dyn RowStream>,
    settings: &Batching,
    mut changes: Option<ChangeFilter>,
    output: &mut Handoff<'_>,
    mapper: &mut Mapper,
) -> u64 {
    let mut source_rows = SourceRows::new(
        rows,
        settings.already_settled.as_deref(),
        settings.output.clone(),
        &settings.context,
    );
    let mut builder = BatchBuilder::new(settings.batch_size, settings.envelope);
    while let Some(read) = source_rows.next() {
        let invalid = match read {
            Read::Row {
                source: row,
                mapped,
            } => match encode(settings, mapper, (row, mapped), &mut builder) {
                Ok(()) => {
                    if let Some(filter) = &mut changes {
                        let (record, listed_under) = builder.last_record();
                        match filter.judge(record, listed_under) {
                            Judgement::Send(fingerprint) => {
                                builder.fingerprints.push(fingerprint);
                            }
                            Judgement::Unchanged => {
                                builder.pop_last();
                                if filter.note_unchanged(row.line) && !output.hand_unchanged(filter)
                                {
                                    return source_rows.left_out;
                                }
                            }
                        }
                    }
                    if !output.send_finished(&mut builder) {
                        return source_rows.left_out;
                    }
                    continue;
                }
                Err(invalid) => skipped(row, invalid),
            },
            Read::Invalid(invalid) => invalid,
            Read::Fatal(message) => {
                if output.flush(&mut builder) && output.hand_all_unchanged(&mut changes) {
                    output.send(Produced::SourceFailed(message));
                }
                return source_rows.left_out;
            }
        };
        match settings.on_invalid_record {
            OnInvalidRecord::Skip => {
                if !output.send(Produced::Skipped(invalid)) {
                    return source_rows.left_out;
                }
            }
            OnInvalidRecord::Stop => {
                // The rows before it are valid: send them, then stop.
                if output.flush(&mut builder) && output.hand_all_unchanged(&mut changes) {
                    output.send(Produced::Stopped(Settled {
                        outcome: Outcome::Failed,
                        ..invalid
                    }));
                }
                return source_rows.left_out;
            }
        }
    }
    if output.flush(&mut builder) {
        output.hand_all_unchanged(&mut changes);
    }
    source_rows.left_out
}

/// Adds a row's record to the batch: the source row's when it is replayed from a rejects
/// file, else the one the output mapping made (`mapped`).
fn encode(
    settings: &Batching,
    mapper: &mut Mapper,
    (row, mapped): (&Row, &Row),
    builder: &mut BatchBuilder,
) -> Result<(), mapping::Invalid> {
    if let Some(record) = &row.record {
        match mapping::replay::replayed(settings.target, settings.limits, record)? {
            Replayed::AsIs => builder.push_with(row.line, |body| write_replayed(body, record)),
            Replayed::Fields(fields) => {
                let flat = Row {
                    line: row.line,
                    fields,
                    record: None,
                };
                builder.push(row.line, &mapper.map(&flat)?);
            }
        }
        return Ok(());
    }
    builder.push(row.line, &mapper.map(mapped)?);
    Ok(())
}

/// A replayed record, sent as it was.
fn write_replayed(body: &mut Vec<u8>, record: &Value) {
    serde_json::to_writer(body, record).expect("writing to a Vec cannot fail");
}

/// Accumulates encoded records into request bodies.
struct BatchBuilder {
    capacity: usize,
    /// The index the next batch gets.
    next_index: u64,
    envelope: Envelope,
    /// The key the current body lists its records under: `d`, `identities`, or for a body
    /// by key, the key of its values.
    key: &'static str,
    lines: Vec<u64>,
    body: Vec<u8>,
    spans: Vec<Range<usize>>,
    /// Fingerprints of the records in `body`, with change detection.
    fingerprints: Vec<Option<RecordFingerprint>>,
    /// A batch cut short because the next record goes under another key, to send first.
    finished: Option<Batch>,
}

const BODY_END: &[u8] = b"]}";

impl BatchBuilder {
    fn new(capacity: usize, envelope: Envelope) -> Self {
        let key = match envelope {
            Envelope::List(key) => key,
            Envelope::ByKey(keys) => keys.first().copied().unwrap_or_default(),
        };
        BatchBuilder {
            capacity,
            next_index: 0,
            envelope,
            key,
            lines: Vec::new(),
            body: body_start(key),
            spans: Vec::new(),
            fingerprints: Vec::new(),
            finished: None,
        }
    }

    /// Adds a mapped record.
    fn push(&mut self, line: u64, record: &Record<'_>) {
        match (record, self.envelope) {
            (Record::Keyed { key, value }, Envelope::ByKey(_)) => {
                if *key != self.key {
                    // Never two keys in one body: what is there goes as it is.
                    self.finished = self.take_current();
                    self.key = key;
                    self.body = body_start(key);
                }
                self.push_with(line, |body| write_replayed(body, value));
            }
            (record, _) => self.push_with(line, |body| record.write_json(body)),
        }
    }

    /// Adds the record that `write` appends to the body.
    fn push_with(&mut self, line: u64, write: impl FnOnce(&mut Vec<u8>)) {
        if !self.lines.is_empty() {
            self.body.push(b',');
        }
        let start = self.body.len();
        write(&mut self.body);
        self.spans.push(start..self.body.len());
        self.lines.push(line);
    }

    /// The last record added, as its JSON text, and the key a body by key lists it under.
    fn last_record(&self) -> (&[u8], Option<&str>) {
        let span = self.spans.last().cloned().unwrap_or_default();
        let listed_under = matches!(self.envelope, Envelope::ByKey(_)).then_some(self.key);
        (&self.body[span], listed_under)
    }

    /// Takes the last record added back out (CleverTap has it already).
    fn pop_last(&mut self) {
        let Some(span) = self.spans.pop() else {
            return;
        };
        self.lines.pop();
        // A record after the first has its comma before it.
        let comma = usize::from(!self.lines.is_empty());
        self.body.truncate(span.start - comma);
    }

    /// A batch ready to send: one cut short by a change of key, or a full one.
    fn take_finished(&mut self) -> Option<Batch> {
        if self.finished.is_some() {
            return self.finished.take();
        }
        if self.lines.len() >= self.capacity {
            return self.take_current();
        }
        None
    }

    /// Every batch, full or not: at the end of the source, or before the run stops.
    fn take(&mut self) -> Option<Batch> {
        self.finished.take().or_else(|| self.take_current())
    }

    fn take_current(&mut self) -> Option<Batch> {
        if self.lines.is_empty() {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        // The next body will be about as long as this one: room for it at once, instead
        // of growing (and copying) it a dozen times.
        let mut next_body = Vec::with_capacity(self.body.len() + BODY_END.len());
        next_body.extend_from_slice(&body_start(self.key));
        let mut body = std::mem::replace(&mut self.body, next_body);
        body.extend_from_slice(BODY_END);
        Some(Batch {
            index,
            lines: std::mem::replace(&mut self.lines, Vec::with_capacity(self.capacity)),
            body: Bytes::from(body),
            spans: std::mem::replace(&mut self.spans, Vec::with_capacity(self.capacity)),
            key: matches!(self.envelope, Envelope::ByKey(_)).then_some(self.key),
            fingerprints: std::mem::take(&mut self.fingerprints),
        })
    }
}

/// `{"d":[`: the start of a body that lists its records under `key`.
fn body_start(key: &str) -> Vec<u8> {
    format!("{{\"{key}\":[").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_request_bodies_with_record_spans() {
        let mut builder = BatchBuilder::new(2, Envelope::List("d"));
        builder.push_with(2, |body| write_replayed(body, &json!({"identity": "a"})));
        assert!(builder.take_finished().is_none());
        builder.push_with(5, |body| write_replayed(body, &json!({"identity": "b"})));
        let batch = builder.take_finished().expect("a full batch");
        assert_eq!(
            &batch.body[..],
            br#"{"d":[{"identity":"a"},{"identity":"b"}]}"#
        );
        assert_eq!(
            (batch.index, batch.first_line(), batch.last_line()),
            (0, 2, 5)
        );
        assert_eq!(batch.record(1), Some(json!({"identity": "b"})));
        assert!(builder.take().is_none());
    }

    #[test]
    fn a_body_by_key_holds_one_key_and_splits_where_the_key_changes() {
        let mut builder = BatchBuilder::new(2, Envelope::ByKey(&["identity", "guid"]));
        let keyed = |key, value: &str| Record::Keyed {
            key,
            value: json!(value),
        };
        builder.push(2, &keyed("identity", "u1"));
        assert!(builder.take_finished().is_none());
        builder.push(3, &keyed("guid", "g1"));
        let first = builder
            .take_finished()
            .expect("cut short at the change of key");
        assert_eq!(&first.body[..], br#"{"identity":["u1"]}"#);
        assert_eq!(first.record(0), Some(json!({"identity": "u1"})));
        builder.push(4, &keyed("guid", "g2"));
        let second = builder.take_finished().expect("a full batch");
        assert_eq!(&second.body[..], br#"{"guid":["g1","g2"]}"#);
        assert_eq!((second.index, second.lines.clone()), (1, vec![3, 4]));
        assert_eq!(second.record(1), Some(json!({"guid": "g2"})));
        assert!(builder.take().is_none());
    }
}
