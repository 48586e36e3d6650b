//! JSON Lines: one JSON object per line; blank lines are ignored.

use std::io::BufRead;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{Row, RowError, RowStream};

/// A longer line is refused rather than read into memory.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

pub(super) struct JsonlStream {
    reader: Box<dyn BufRead + Send>,
    line: u64,
    buffer: Vec<u8>,
    /// The keys of the last object read: the next object's keys are nearly always the same,
    /// and reusing them saves two allocations per field and lets the mapper recognise its
    /// columns by pointer.
    keys: Vec<Arc<str>>,
}

impl JsonlStream {
    pub(super) fn new(reader: Box<dyn BufRead + Send>) -> Self {
        JsonlStream {
            reader,
            line: 0,
            buffer: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Reads one line into the buffer, refusing to grow past the limit.
    fn read_line(&mut self) -> std::io::Result<(usize, bool)> {
        self.buffer.clear();
        let mut total = 0;
        let mut too_long = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok((total, too_long));
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(index) => (&available[..=index], true),
                None => (available, false),
            };
            let length = chunk.len();
            if self.buffer.len() + length <= MAX_LINE_BYTES {
                self.buffer.extend_from_slice(chunk);
            } else {
                too_long = true;
            }
            self.reader.consume(length);
            total += length;
            if done {
                return Ok((total, too_long));
            }
        }
    }
}

impl RowStream for JsonlStream {
    fn columns(&self) -> Option<&[Arc<str>]> {
        None
    }

    fn read_row(&mut self, row: &mut Row) -> Option<Result<(), RowError>> {
        loop {
            let (read, too_long) = match self.read_line() {
                Ok(result) => result,
                Err(error) => return Some(Err(RowError::Fatal(error.to_string()))),
            };
            if read == 0 {
                return None;
            }
            self.line += 1;
            let line = self.line;
            if too_long {
                return Some(Err(RowError::Invalid {
                    line,
                    reason: format!(
                        "the line is longer than {} MiB",
                        MAX_LINE_BYTES / 1024 / 1024
                    ),
                    raw: String::new(),
                }));
            }
            let Ok(text) = std::str::from_utf8(&self.buffer) else {
                return Some(Err(RowError::Invalid {
                    line,
                    reason: "the line is not valid UTF-8".into(),
                    raw: String::from_utf8_lossy(&self.buffer).into_owned(),
                }));
            };
            // The last line of a file cut short (a copy that stopped, a full disk) has no
            // line break.
            let cut_short = !self.buffer.ends_with(b"\n");
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            if !text.starts_with('{') {
                let reason = match serde_json::from_str::<Value>(text) {
                    Ok(_) => "the line is JSON but not an object".to_string(),
                    Err(error) => invalid_json(&error),
                };
                return Some(Err(RowError::Invalid {
                    line,
                    reason,
                    raw: text.to_string(),
                }));
            }
            row.fields.clear();
            let fields = Fields {
                into: &mut row.fields,
                keys: &mut self.keys,
            };
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let parsed = fields
                .deserialize(&mut deserializer)
                .and_then(|()| deserializer.end());
            return Some(match parsed {
                Ok(()) => {
                    row.line = line;
                    Ok(())
                }
                Err(error) if cut_short && error.is_eof() => Err(RowError::Fatal(format!(
                    "line {line}: the file ends inside this line's JSON, so it was cut short (an export or copy that did not finish?): send the whole file"
                ))),
                Err(error) => Err(RowError::Invalid {
                    line,
                    reason: invalid_json(&error),
                    raw: text.to_string(),
                }),
            });
        }
    }
}

/// A JSON object's fields in order, read into a row's fields. A key given twice, or an
/// integer too large for 64 bits (serde_json would round it to a float: `2^64` becomes
/// `18446744073709552000`), is an error instead of a silent change of the data.
struct Fields<'a> {
    into: &'a mut Vec<(Arc<str>, Value)>,
    /// The keys of the last object, updated to this one's.
    keys: &'a mut Vec<Arc<str>>,
}

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Fields { into, keys } = self;
        while let Some(key) = map.next_key_seed(Key {
            last: keys.get(into.len()),
        })? {
            if into.iter().any(|(name, _)| **name == *key) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{key}` appears twice in the object; keep one"
                )));
            }
            let value: Value = map.next_value()?;
            if let Some(number) = inexact_integer(&value) {
                return Err(serde::de::Error::custom(format!(
                    "`{key}` is the integer {number}, beyond 64 bits, which cannot be sent exactly; write it as a string (in quotes) to send it as text"
                )));
            }
            match keys.get_mut(into.len()) {
                Some(kept) if Arc::ptr_eq(kept, &key) => {}
                Some(kept) => *kept = Arc::clone(&key),
                None => keys.push(Arc::clone(&key)),
            }
            into.push((key, value));
        }
        keys.truncate(into.len());
        Ok(())
    }
}

/// A key, shared with the last object's key at the same place when they are the same.
struct Key<'a> {
    last: Option<&'a Arc<str>>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Arc<str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Arc<str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = Arc<str>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Arc<str>, E> {
        Ok(match self.last {
            Some(last) if **last == *key => Arc::clone(last),
            _ => Arc::from(key),
        })
    }
}

/// A whole number that serde_json had to read as a float because it is beyond the 64-bit
/// integers (it is sent rounded otherwise), in a value or in an array or object inside it.
fn inexact_integer(value: &Value) -> Option<f64> {
    const BEYOND_64_BITS: f64 = 9_223_372_036_854_775_808.0; // 2^63
    match value {
        Value::Number(number) => number.as_f64().filter(|float| {
            number.is_f64() && float.fract() == 0.0 && float.abs() >= BEYOND_64_BITS
        }),
        Value::Array(values) => values.iter().find_map(inexact_integer),
        Value::Object(fields) => fields.values().find_map(inexact_integer),
        _ => None,
    }
}

/// What is wrong with a line's JSON, at its column: serde's own "at line 1 column 14" is
/// about the line alone, and beside the file's line number it misleads.
fn invalid_json(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let problem = message
        .rfind(" at line ")
        .map_or(message.as_str(), |at| &message[..at]);
    format!("invalid JSON at column {}: {problem}", error.column())
}
