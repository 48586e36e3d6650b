//! CleverTap records as the mapping builds them, and their JSON text in a request body.

use serde_json::Value;

use super::json;

/// A CleverTap record, ready to be written into a request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    /// A profile or an event for `/1/upload`.
    Upload(UploadRecord<'a>),
    /// A record of another API (tokens, demerge, subscriptions, disassociation).
    Plain(Value),
    /// A value that a request lists under its key, with the other values of that key:
    /// `{"identity": "u1"}` goes into `{"identity": ["u1", ...]}` (profile deletion).
    Keyed {
        /// The list it goes into: `identity` or `guid`.
        key: &'static str,
        /// The value listed.
        value: Value,
    },
}

impl Record<'_> {
    /// Appends the record's JSON text to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Record::Upload(record) => record.write_json(out),
            Record::Plain(value) => json::write_value(out, value),
            Record::Keyed { key, value } => {
                out.push(b'{');
                json::write_str(out, key);
                out.push(b':');
                json::write_value(out, value);
                out.push(b'}');
            }
        }
    }

    /// The record as a JSON value (an upload record's text, read back).
    pub fn into_json(self) -> Value {
        match self {
            Record::Plain(value) => value,
            upload => {
                let mut text = Vec::new();
                upload.write_json(&mut text);
                serde_json::from_slice(&text).expect("a record's JSON text is valid JSON")
            }
        }
    }
}

/// A profile or event record whose fields are already JSON text, written while the row
/// was checked into the mapper's buffers (see [`RecordText`]): mapping a row allocates
/// nothing, as this is the hot path of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord<'a> {
    kind: RecordKind,
    text: &'a RecordText,
}

/// A profile or an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordKind {
    Profile,
    Event,
}

/// The parts of a profile or event record as JSON text, kept by the mapper and reused
/// for every row.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct RecordText {
    /// `,"identity":"u1"`, one such piece per identity field.
    pub(super) identity: Vec<u8>,
    /// `,"ts":1700000000` and, for events, `,"evtName":"Charged"`.
    pub(super) header: Vec<u8>,
    /// `"Name":"Jo","Age":31`: the `profileData` / `evtData` members.
    pub(super) data: Vec<u8>,
    /// How many members `data` has.
    pub(super) properties: usize,
}

impl RecordText {
    /// Empties every part for the next row, keeping the memory.
    pub(super) fn clear(&mut self) {
        self.identity.clear();
        self.header.clear();
        self.data.clear();
        self.properties = 0;
    }

    /// Adds an identity field.
    pub(super) fn push_identity(&mut self, field: &str, value: &Value) {
        self.identity.push(b',');
        json::write_str(&mut self.identity, field);
        self.identity.push(b':');
        json::write_value(&mut self.identity, value);
    }

    /// Adds a top-level field after the identity: `ts`, `evtName`.
    pub(super) fn push_header(&mut self, field: &str, value: &Value) {
        self.header.push(b',');
        json::write_str(&mut self.header, field);
        self.header.push(b':');
        json::write_value(&mut self.header, value);
    }

    /// Adds a property whose key is already JSON text with its colon (`"Name":`).
    pub(super) fn push_property(&mut self, key: &[u8], value: &Value) {
        if self.properties > 0 {
            self.data.push(b',');
        }
        self.data.extend_from_slice(key);
        json::write_value(&mut self.data, value);
        self.properties += 1;
    }
}

impl RecordText {
    /// Adds a property whose key is already JSON text with its colon, and whose value
    /// `write` appends as JSON text.
    pub(super) fn push_raw_property(&mut self, key: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        if self.properties > 0 {
            self.data.push(b',');
        }
        self.data.extend_from_slice(key);
        write(&mut self.data);
        self.properties += 1;
    }
}

impl<'a> UploadRecord<'a> {
    pub(super) fn new(kind: RecordKind, text: &'a RecordText) -> Self {
        UploadRecord { kind, text }
    }

    /// `{"type":…,<identity fields>,"ts":…,"evtName":…,"profileData"|"evtData":{…}}`.
    fn write_json(&self, out: &mut Vec<u8>) {
        let (start, data_key): (&[u8], &[u8]) = match self.kind {
            RecordKind::Profile => (br#"{"type":"profile""#, br#","profileData":{"#),
            RecordKind::Event => (br#"{"type":"event""#, br#","evtData":{"#),
        };
        out.extend_from_slice(start);
        out.extend_from_slice(&self.text.identity);
        out.extend_from_slice(&self.text.header);
        out.extend_from_slice(data_key);
        out.extend_from_slice(&self.text.data);
        out.extend_from_slice(b"}}");
    }
}
