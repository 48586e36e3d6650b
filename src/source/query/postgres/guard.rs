//! Values too long to send, measured by the server before they are sent: the query is run
//! inside one that sends, in place of a value longer than tapline sends, NULL and the
//! value's length. A client reads a row whole (one message), so a 150 MB value would cost
//! 150 MB before tapline could refuse it; measured by the server, it costs nothing.

use tokio_postgres::Column;

use super::values::Kind;
use crate::source::exact::MAX_VALUE_BYTES;

/// The query as run, when a column can hold a value of any length.
pub(super) struct Guarded {
    /// The user's query inside the one that measures its values.
    pub(super) sql: String,
    /// For each result column, the column that holds its value's length when that value is
    /// too long (NULL otherwise); `None` for a column whose values are never long.
    pub(super) lengths: Vec<Option<usize>>,
}

/// The alias of the user's query inside the guard.
const INNER: &str = "tapline_source";

/// The guard around `query`, whose result columns are `columns`, read as `kinds`; `None`
/// when no column can hold a long value (the query runs as it is).
pub(super) fn guard(query: &str, columns: &[Column], kinds: &[Kind]) -> Option<Guarded> {
    let long: Vec<bool> = kinds.iter().map(|kind| kind.unbounded()).collect();
    if !long.contains(&true) {
        return None;
    }
    let mut selected = Vec::with_capacity(columns.len());
    let mut measured = Vec::new();
    let mut lengths = Vec::with_capacity(columns.len());
    for (column, long) in columns.iter().zip(long) {
        let name = quoted(column.name());
        let value = format!("{INNER}.{name}");
        if long {
            let length = format!("octet_length({value}::text)");
            selected.push(format!(
                "CASE WHEN {length} > {MAX_VALUE_BYTES} THEN NULL ELSE {value} END AS {name}"
            ));
            lengths.push(Some(columns.len() + measured.len()));
            measured.push(format!(
                "CASE WHEN {length} > {MAX_VALUE_BYTES} THEN {length} END AS \"tapline length {}\"",
                measured.len()
            ));
        } else {
            selected.push(value);
            lengths.push(None);
        }
    }
    // The query on lines of its own, so a comment ending its last line ends there.
    let inner = without_final_semicolon(query);
    let list = selected.into_iter().chain(measured).collect::<Vec<_>>();
    Some(Guarded {
        sql: format!("SELECT {} FROM (\n{inner}\n) AS {INNER}", list.join(", ")),
        lengths,
    })
}

/// `query` without the `;` that may end it (which would end the statement inside the guard
/// early): the last `;` followed by nothing but blanks and comments, found as PostgreSQL's
/// lexer would, past quoted strings and names, dollar-quoted bodies and nested comments.
fn without_final_semicolon(query: &str) -> String {
    let bytes = query.as_bytes();
    let mut last = None;
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let skip = match bytes[at] {
            b';' => {
                last = Some(at);
                1
            }
            b if b.is_ascii_whitespace() => 1,
            _ if rest.starts_with(b"--") => {
                rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())
            }
            _ if rest.starts_with(b"/*") => block_comment(rest),
            token => {
                last = None;
                match token {
                    b'\'' => quoted_end(rest, b'\'', escapes_backslash(&bytes[..at])),
                    b'"' => quoted_end(rest, b'"', false),
                    b'$' => dollar_quoted(rest).unwrap_or(1),
                    _ => 1,
                }
            }
        };
        at += skip.max(1);
    }
    match last {
        // A `;` is one byte, on a character boundary.
        Some(semicolon) => format!("{}{}", &query[..semicolon], &query[semicolon + 1..]),
        None => query.to_string(),
    }
}

/// The length of the `/* ... */` comment `text` starts with; they nest in PostgreSQL.
fn block_comment(text: &[u8]) -> usize {
    let mut depth = 0;
    let mut at = 0;
    while at < text.len() {
        if text[at..].starts_with(b"/*") {
            depth += 1;
            at += 2;
        } else if text[at..].starts_with(b"*/") {
            depth -= 1;
            at += 2;
            if depth == 0 {
                return at;
            }
        } else {
            at += 1;
        }
    }
    text.len()
}

/// The length of the string or name `text` starts with, closed by `quote` (doubled inside
/// it); with `backslash`, `\\` escapes the next byte (an `E'...'` string).
fn quoted_end(text: &[u8], quote: u8, backslash: bool) -> usize {
    let mut at = 1;
    while at < text.len() {
        if backslash && text[at] == b'\\' {
            at += 2;
        } else if text[at] == quote {
            if text.get(at + 1) == Some(&quote) {
                at += 2;
            } else {
                return at + 1;
            }
        } else {
            at += 1;
        }
    }
    text.len()
}

/// Whether a string opening after `before` is an escape string (`E'...'`).
fn escapes_backslash(before: &[u8]) -> bool {
    match before.split_last() {
        Some((b'E' | b'e', earlier)) => !earlier.last().is_some_and(|&b| identifier_byte(b)),
        _ => false,
    }
}

/// The length of the dollar-quoted body `text` starts with (`$$...$$`, `$fn$...$fn$`), or
/// `None` when the `$` opens no such body (a parameter, `$1`).
fn dollar_quoted(text: &[u8]) -> Option<usize> {
    let tag_end = 1 + text[1..].iter().position(|&b| !identifier_byte(b))?;
    if text[tag_end] != b'$' || text.get(1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let tag = &text[..=tag_end];
    let body = &text[tag.len()..];
    let end = body.windows(tag.len()).position(|window| window == tag);
    Some(end.map_or(text.len(), |end| tag.len() + end + tag.len()))
}

/// A byte of a name: a letter, a digit, `_`, or part of a non-ASCII letter.
fn identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || !byte.is_ascii()
}

/// A column's name as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_semicolon_goes_and_every_other_stays() {
        let cases = [
            ("SELECT 1", "SELECT 1"),
            ("SELECT 1;", "SELECT 1"),
            ("SELECT 1 ;\n  ", "SELECT 1 \n  "),
            ("SELECT 1; -- newest first", "SELECT 1 -- newest first"),
            (
                "SELECT 1; /* a /* nested */ note */",
                "SELECT 1 /* a /* nested */ note */",
            ),
            ("SELECT ';'", "SELECT ';'"),
            ("SELECT 'it''s;'", "SELECT 'it''s;'"),
            ("SELECT E'\\';' ;", "SELECT E'\\';' "),
            ("SELECT \"a;\" FROM t;", "SELECT \"a;\" FROM t"),
            ("SELECT $$;$$", "SELECT $$;$$"),
            ("SELECT $f$ ; $f$;", "SELECT $f$ ; $f$"),
            ("SELECT 1 -- ;", "SELECT 1 -- ;"),
            (
                "SELECT * FROM t WHERE n > $1;",
                "SELECT * FROM t WHERE n > $1",
            ),
            ("SELECT 'é';", "SELECT 'é'"),
            ("SELECT é, $é$;$é$ FROM ü;", "SELECT é, $é$;$é$ FROM ü"),
            ("SELECT 'unclosed;", "SELECT 'unclosed;"),
            ("SELECT $", "SELECT $"),
        ];
        for (query, expected) in cases {
            assert_eq!(without_final_semicolon(query), expected, "{query}");
        }
    }

    #[test]
    fn names_are_quoted_as_identifiers() {
        assert_eq!(quoted("Order \"#\""), "\"Order \"\"#\"\"\"");
        assert_eq!(quoted("?column?"), "\"?column?\"");
    }
}
