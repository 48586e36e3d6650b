//! JSON Lines: one JSON object per line; blank lines are ignored.

use std::io::BufRead;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{Row, RowError, RowStream};

/// A longer line is refused rather than read into memory.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

pub(super) struct JsonlStream {
    reader: Box<dyn BufRead + Send>,
    line: u64,
    buffer: Vec<u8>,
}

impl JsonlStream {
    pub(super) fn new(reader: Box<dyn BufRead + Send>) -> Self {
        JsonlStream {
            reader,
            line: 0,
            buffer: Vec::new(),
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
                    Err(error) => format!("invalid JSON: {error}"),
                };
                return Some(Err(RowError::Invalid {
                    line,
                    reason,
                    raw: text.to_string(),
                }));
            }
            row.fields.clear();
            return Some(match serde_json::from_str::<Fields>(text) {
                Ok(Fields(fields)) => {
                    row.line = line;
                    row.fields = fields;
                    Ok(())
                }
                Err(error) if cut_short && error.is_eof() => Err(RowError::Fatal(format!(
                    "line {line}: the file ends inside this line's JSON, so it was cut short (an export or copy that did not finish?): send the whole file"
                ))),
                Err(error) => Err(RowError::Invalid {
                    line,
                    reason: format!("invalid JSON: {error}"),
                    raw: text.to_string(),
                }),
            });
        }
    }
}

/// A JSON object's fields in order. A key given twice, or an integer too large for 64 bits
/// (serde_json would round it to a float: `2^64` becomes `18446744073709552000`), is an error
/// instead of a silent change of the data.
struct Fields(Vec<(Arc<str>, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields: Vec<(Arc<str>, Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.iter().any(|(name, _)| **name == *key) {
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
            fields.push((Arc::from(key), value));
        }
        Ok(Fields(fields))
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
