//! Reading rows from every format, good and broken.

use std::io::Write;

use serde_json::json;

use super::*;

fn source_from(name: &str, bytes: &[u8]) -> (tempfile::TempDir, FileSource) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    let compression = if name.ends_with(".gz") {
        Compression::Gzip
    } else if name.ends_with(".zst") {
        Compression::Zstd
    } else {
        Compression::None
    };
    let format = if name.contains(".csv") {
        SourceFormat::Csv
    } else if name.contains(".tsv") {
        SourceFormat::Tsv
    } else {
        SourceFormat::Jsonl
    };
    let mut file = File::create(&path).expect("create");
    match compression {
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            encoder.write_all(bytes).expect("write");
            encoder.finish().expect("finish");
        }
        Compression::Zstd => {
            // Two frames, as a file appended to by two writers: both are read.
            let half = bytes.len() / 2;
            for part in [&bytes[..half], &bytes[half..]] {
                file.write_all(&zstd::encode_all(part, 3).expect("compress"))
                    .expect("write");
            }
        }
        Compression::None => file.write_all(bytes).expect("write"),
    }
    (
        dir,
        FileSource {
            path,
            format,
            compression,
            timezone: chrono_tz::Tz::UTC,
            projection: None,
            poll: None,
        },
    )
}

/// Reads every row: `Ok(json)` for rows, `Err("line N: reason")` for invalid ones.
fn read_all(name: &str, bytes: &[u8]) -> Vec<Result<Value, String>> {
    let (_dir, source) = source_from(name, bytes);
    let mut stream = open(&source).expect("opens");
    let mut rows = Vec::new();
    while let Some(row) = stream.next_row() {
        rows.push(
            row.map(|row| json!({"line": row.line, "row": row.to_json()}))
                .map_err(|e| e.to_string()),
        );
    }
    rows
}

#[test]
fn reads_csv_with_quotes_and_line_numbers() {
    let rows = read_all(
        "a.csv",
        b"identity,Name\n1,\"Smith, Jo\"\n\n2,\"multi\nline\"\n3,x\n",
    );
    assert_eq!(
        rows,
        vec![
            Ok(json!({"line": 2, "row": {"identity": "1", "Name": "Smith, Jo"}})),
            Ok(json!({"line": 4, "row": {"identity": "2", "Name": "multi\nline"}})),
            Ok(json!({"line": 6, "row": {"identity": "3", "Name": "x"}})),
        ]
    );
}

#[test]
fn reads_tsv_and_gzip() {
    let rows = read_all("a.tsv.gz", b"identity\tName\n1\tJo \"Q\"\n");
    assert_eq!(
        rows,
        vec![Ok(
            json!({"line": 2, "row": {"identity": "1", "Name": "Jo \"Q\""}})
        )]
    );
}

#[test]
fn reads_every_zstd_frame_of_csv_tsv_and_json_lines() {
    let expected = vec![
        Ok(json!({"line": 2, "row": {"identity": "1", "Name": "Jo"}})),
        Ok(json!({"line": 3, "row": {"identity": "2", "Name": "Al"}})),
        Ok(json!({"line": 4, "row": {"identity": "3", "Name": "Bo"}})),
    ];
    assert_eq!(
        read_all("a.csv.zst", b"identity,Name\n1,Jo\n2,Al\n3,Bo\n"),
        expected
    );
    assert_eq!(
        read_all("a.tsv.zst", b"identity\tName\n1\tJo\n2\tAl\n3\tBo\n"),
        expected
    );
    let lines = read_all(
        "a.jsonl.zst",
        b"{\"identity\":\"1\"}\n{\"identity\":\"2\"}\n{\"identity\":\"3\"}\n",
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    // Bytes that are no zstd frame: a clear error, no panic.
    let (_dir, source) = source_from("b.csv", b"identity\n1\n");
    let broken = FileSource {
        compression: Compression::Zstd,
        ..source
    };
    let failed = open(&broken).err().map(|error| error.to_string());
    assert!(failed.is_some_and(|message| message.contains("b.csv")));
}

#[test]
fn reads_concatenated_gzip_members() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a.jsonl.gz");
    let mut bytes = Vec::new();
    for part in [
        &b"{\"identity\":\"1\"}\n"[..],
        &b"{\"identity\":\"2\"}\n"[..],
    ] {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(part).expect("write");
        bytes.extend(encoder.finish().expect("finish"));
    }
    std::fs::write(&path, bytes).expect("write");
    let mut stream = open(&FileSource {
        path,
        format: SourceFormat::Jsonl,
        compression: Compression::Gzip,
        timezone: chrono_tz::Tz::UTC,
        projection: None,
        poll: None,
    })
    .expect("opens");
    let mut count = 0;
    while let Some(row) = stream.next_row() {
        row.expect("valid row");
        count += 1;
    }
    assert_eq!(count, 2);
}

#[test]
fn wrong_field_count_is_an_invalid_row_and_reading_goes_on() {
    let rows = read_all("a.csv", b"identity,Name\n1,a,extra\n2,b\n");
    assert!(
        matches!(&rows[0], Err(reason) if reason.starts_with("line 2: the row has 3 fields")),
        "{rows:?}"
    );
    assert_eq!(
        rows[1],
        Ok(json!({"line": 3, "row": {"identity": "2", "Name": "b"}}))
    );
}

#[test]
fn an_unterminated_quote_ends_the_read_at_its_line() {
    // The quote runs to the end of the file.
    let rows = read_all("a.csv", b"identity,Name\n1,\"open\n2,b\n");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        matches!(&rows[0], Err(reason) if reason.starts_with("line 2: a quote opened in this row is not closed")),
        "{rows:?}"
    );
    // Later quotes pair up with the wrong ones, and the file happens to end with a quote.
    let rows = read_all(
        "a.csv",
        b"identity,Name,Plan\nu1,a,x\nu2,\"P,2\nu3,c,x\nu4,d,\"y\"\n",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].is_ok());
    assert!(
        matches!(&rows[1], Err(reason) if reason.starts_with("line 3: a quote opened")),
        "{rows:?}"
    );
    // A multi-line field that is closed is a row like any other, even at the end.
    let rows = read_all("a.csv", b"identity,Name\n1,\"two\nlines\"");
    assert_eq!(
        rows,
        vec![Ok(
            json!({"line": 2, "row": {"identity": "1", "Name": "two\nlines"}})
        )]
    );
}

#[test]
fn a_row_past_the_size_limit_ends_the_read_without_reading_it_into_memory() {
    // 500,000 lines swallowed by one quote, then a huge line without quotes (TSV), both
    // also through gzip.
    let mut swallowed = b"identity,Name\nu1,a\nu2,\"P,2\n".to_vec();
    for i in 0..500_000 {
        swallowed.extend_from_slice(format!("u{i},name {i}\n").as_bytes());
    }
    let mut long_line = b"identity\tName\nu1\ta\nu2\t".to_vec();
    long_line.resize(long_line.len() + 3 * 1024 * 1024, b'x');
    long_line.extend_from_slice(b"\nu3\tc\n");
    for (name, bytes) in [
        ("a.csv", &swallowed),
        ("a.csv.gz", &swallowed),
        ("a.tsv", &long_line),
        ("a.tsv.gz", &long_line),
    ] {
        let rows = read_all(name, bytes);
        assert_eq!(rows.len(), 2, "{name}: {rows:?}");
        assert!(rows[0].is_ok(), "{name}: {rows:?}");
        assert!(
            matches!(&rows[1], Err(reason) if reason.starts_with("line 3: the row starting here is longer than 1 MiB")),
            "{name}: {rows:?}"
        );
    }
    let (_dir, source) = source_from("a.csv", &swallowed);
    let mut stream = open(&source).unwrap();
    while let Some(Ok(_)) = stream.next_row() {}
    assert!(
        stream.next_row().is_none(),
        "nothing is read past a broken row"
    );
}

#[test]
fn a_json_lines_file_cut_short_ends_the_read() {
    let rows = read_all("a.jsonl", b"{\"identity\":1}\n{\"identity\":2,\"Na");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        matches!(&rows[1], Err(reason) if reason.starts_with("line 2: the file ends inside this line's JSON")),
        "{rows:?}"
    );
    // A broken line with its line break is one bad row; the next is read.
    let rows = read_all("a.jsonl", b"{\"identity\":2,\"Na\n{\"identity\":3}");
    assert!(matches!(&rows[0], Err(reason) if reason.contains("invalid JSON")));
    assert_eq!(rows[1], Ok(json!({"line": 2, "row": {"identity": 3}})));
    // The position is the column in this line, said once: never serde's "line 1".
    let rows = read_all("a.jsonl", b"{\"identity\":\"u1\"}\n{\"identity\": u2}\n");
    assert!(
        matches!(&rows[1], Err(reason) if reason.ends_with("invalid JSON at column 14: expected value")),
        "{rows:?}"
    );
}

#[test]
fn invalid_utf8_is_an_invalid_row() {
    let rows = read_all("a.csv", b"identity,Name\n1,\xff\xfe\n2,ok\n");
    assert!(
        matches!(&rows[0], Err(reason) if reason.contains("`Name` is not valid UTF-8")),
        "{rows:?}"
    );
    assert!(rows[1].is_ok());
    let rows = read_all("a.jsonl", b"{\"a\":\"\xff\"}\n{\"a\":1}\n");
    assert!(
        matches!(&rows[0], Err(reason) if reason.contains("not valid UTF-8")),
        "{rows:?}"
    );
    assert_eq!(rows[1], Ok(json!({"line": 2, "row": {"a": 1}})));
}

#[test]
fn jsonl_keeps_types_and_reports_bad_lines() {
    let rows = read_all(
        "a.jsonl",
        b"{\"identity\":1,\"Tags\":[\"a\"]}\n\n[1]\n{bad\n",
    );
    assert_eq!(
        rows[0],
        Ok(json!({"line": 1, "row": {"identity": 1, "Tags": ["a"]}}))
    );
    assert!(
        matches!(&rows[1], Err(reason) if reason.contains("line 3: the line is JSON but not an object"))
    );
    assert!(matches!(&rows[2], Err(reason) if reason.contains("line 4: invalid JSON")));
}

#[test]
fn empty_and_header_only_files() {
    let (_dir, source) = source_from("a.csv", b"");
    assert!(matches!(open(&source), Err(OpenError::Empty(_))));
    assert!(read_all("a.csv", b"identity,Name\n").is_empty());
    assert!(read_all("a.jsonl", b"").is_empty());
}

#[test]
fn bad_headers_are_refused() {
    for (bytes, expected) in [
        (
            &b"identity,identity\n1,2\n"[..],
            "names column `identity` twice",
        ),
        (&b"identity,\n1,2\n"[..], "empty name for column 2"),
        (&b"identity,\xff\n1,2\n"[..], "invalid UTF-8 in column 2"),
    ] {
        let (_dir, source) = source_from("a.csv", bytes);
        let error = open(&source)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn columns_come_from_the_header_or_the_first_record() {
    let (_dir, source) = source_from("a.csv", b"\xef\xbb\xbfidentity,Name\n");
    assert_eq!(columns(&source).expect("columns"), vec!["identity", "Name"]);
    let (_dir, source) = source_from("a.jsonl", b"{\"evtName\":\"x\",\"identity\":\"1\"}\n");
    assert_eq!(
        columns(&source).expect("columns"),
        vec!["evtName", "identity"]
    );
}

#[test]
fn line_numbers_hold_without_a_final_line_break() {
    let rows = read_all("a.csv", b"identity,Name\n1,a\n\n\"2\",\"b\nc\"");
    assert_eq!(
        rows[1],
        Ok(json!({"line": 4, "row": {"identity": "2", "Name": "b\nc"}}))
    );
    let rows = read_all("a.csv", b"identity,Name\r\n1,a\r\n2,b");
    assert_eq!(
        rows[1],
        Ok(json!({"line": 3, "row": {"identity": "2", "Name": "b"}}))
    );
}

#[test]
fn json_lines_refuse_duplicate_keys_and_integers_that_cannot_be_exact() {
    let rows = read_all(
        "a.jsonl",
        b"{\"identity\":\"u1\",\"Plan\":\"a\",\"Plan\":\"b\"}\n{\"identity\":\"u2\",\"Big\":18446744073709551616}\n{\"identity\":\"u3\",\"Big\":18446744073709551615,\"Neg\":-9223372036854775808,\"F\":1.5}\n{\"identity\":\"u4\",\"L\":[1,36893488147419103232]}\n",
    );
    assert!(
        matches!(&rows[0], Err(reason) if reason.contains("the key `Plan` appears twice")),
        "{rows:?}"
    );
    assert!(
        matches!(&rows[1], Err(reason) if reason.contains("`Big` is the integer") && reason.contains("write it as a string")),
        "{rows:?}"
    );
    // Within 64 bits they are exact, and floats stay floats.
    assert_eq!(
        rows[2],
        Ok(
            json!({"line": 3, "row": {"identity": "u3", "Big": 18446744073709551615u64, "Neg": i64::MIN, "F": 1.5}})
        )
    );
    assert!(
        matches!(&rows[3], Err(reason) if reason.contains("`L` is the integer")),
        "{rows:?}"
    );
}
