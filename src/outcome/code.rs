//! Why a record ended where it did: CleverTap's per-record code, or one of tapline's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The reason code of a record that was not accepted, as the rejects file, `--json`, the
/// history and notifications write it: CleverTap's number (`515`) or one of tapline's names
/// (`malformed_row`, `http_503`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// CleverTap's per-record code (`515`), answered by CleverTap or given by tapline's checks
    /// of the same rule.
    CleverTap(u16),
    /// It breaks a rule CleverTap has no code for (`invalid_record`).
    InvalidRecord,
    /// A source row that cannot be read as one (`malformed_row`).
    MalformedRow,
    /// A custom-list row without an identity (`empty_row`), always skipped.
    EmptyRow,
    /// CleverTap answered the request with this HTTP status (`http_503`).
    Http(u16),
    /// No answer in time (`timeout`).
    Timeout,
    /// No connection (`connect`).
    Connect,
    /// The connection broke during the answer (`connection_broken`).
    ConnectionBroken,
    /// An answer tapline cannot read (`invalid_response`).
    InvalidResponse,
    /// CleverTap could not give a custom list's upload URL yet (`not_ready`).
    NotReady,
    /// A custom list's spool file could not be written or read (`spool`).
    Spool,
    /// CleverTap refused the credentials (`unauthorized`).
    Unauthorized,
    /// Never sent: the run stopped before (`not_sent`).
    NotSent,
    /// CleverTap answered `fail` for the whole request (`fail`).
    RequestFailed,
    /// CleverTap listed it as unprocessed without a code (`rejected`).
    Rejected,
    /// CleverTap's answer does not say what became of it: an `unprocessed` entry named no
    /// record of the request, or `processed` did not add up (`unmatched_answer`).
    UnmatchedAnswer,
}

impl Code {
    /// The code of a record that breaks a CleverTap rule: its number, or `invalid_record`
    /// when CleverTap has none (0).
    pub fn of_rule(code: u16) -> Code {
        if code == 0 {
            Code::InvalidRecord
        } else {
            Code::CleverTap(code)
        }
    }

    /// Its name for tapline's own codes; `None` for those with numbers.
    fn name(self) -> Option<&'static str> {
        Some(match self {
            Code::CleverTap(_) | Code::Http(_) => return None,
            Code::InvalidRecord => "invalid_record",
            Code::MalformedRow => "malformed_row",
            Code::EmptyRow => "empty_row",
            Code::Timeout => "timeout",
            Code::Connect => "connect",
            Code::ConnectionBroken => "connection_broken",
            Code::InvalidResponse => "invalid_response",
            Code::NotReady => "not_ready",
            Code::Spool => "spool",
            Code::Unauthorized => "unauthorized",
            Code::NotSent => "not_sent",
            Code::RequestFailed => "fail",
            Code::Rejected => "rejected",
            Code::UnmatchedAnswer => "unmatched_answer",
        })
    }
}

/// Every named code, for parsing.
const NAMED: [Code; 14] = [
    Code::InvalidRecord,
    Code::MalformedRow,
    Code::EmptyRow,
    Code::Timeout,
    Code::Connect,
    Code::ConnectionBroken,
    Code::InvalidResponse,
    Code::NotReady,
    Code::Spool,
    Code::Unauthorized,
    Code::NotSent,
    Code::RequestFailed,
    Code::Rejected,
    Code::UnmatchedAnswer,
];

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.name()) {
            (Code::CleverTap(code), _) => write!(f, "{code}"),
            (Code::Http(status), _) => write!(f, "http_{status}"),
            (_, Some(name)) => f.write_str(name),
            (_, None) => Ok(()),
        }
    }
}

/// A text that is not a code tapline writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a code tapline writes")]
pub struct UnknownCode(String);

impl FromStr for Code {
    type Err = UnknownCode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(code) = text.parse::<u16>() {
            return Ok(Code::CleverTap(code));
        }
        if let Some(status) = text.strip_prefix("http_").and_then(|s| s.parse().ok()) {
            return Ok(Code::Http(status));
        }
        NAMED
            .into_iter()
            .find(|code| code.name() == Some(text))
            .ok_or_else(|| UnknownCode(text.to_string()))
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Compares with the code's text, as tests and callers that read JSON have it.
impl PartialEq<&str> for Code {
    fn eq(&self, text: &&str) -> bool {
        text.parse::<Code>().is_ok_and(|code| code == *self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_written() {
        let mut codes = NAMED.to_vec();
        codes.extend([Code::CleverTap(515), Code::Http(503)]);
        for code in codes {
            let text = code.to_string();
            assert_eq!(text.parse::<Code>(), Ok(code), "{text}");
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(text));
        }
        assert_eq!(Code::CleverTap(515).to_string(), "515");
        assert_eq!(Code::RequestFailed.to_string(), "fail");
        assert_eq!(Code::of_rule(0), Code::InvalidRecord);
        assert!("x".parse::<Code>().is_err());
    }
}
