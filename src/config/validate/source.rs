//! The source: a file (its path, format and compression) or a query (its database, SQL and
//! incremental column), and its time zone.

use super::connection::resolve_database;
use crate::config::Credentials;
use crate::config::diagnostic::{Diagnostic, did_you_mean};
use crate::config::file::{DatabaseRef, SourceFile, SourceFormat};
use crate::config::location::Location;
use crate::config::model::{Compression, Dialect, FileSource, QuerySource, Source};
use crate::config::yaml::Node;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub(super) fn build_source(
    file: &Path,
    root: &Node,
    spec: &SourceFile,
    (folder, credentials): (&Path, Credentials),
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Source> {
    let timezone = match &spec.timezone {
        None => Some(chrono_tz::Tz::UTC),
        Some(name) => time_zone(file, root, "/source/timezone", name, diagnostics),
    };
    let query_fields = [
        ("database", spec.database.is_some()),
        ("query", spec.query.is_some()),
        ("query_file", spec.query_file.is_some()),
        ("incremental", spec.incremental.is_some()),
    ];
    match (&spec.path, &spec.database) {
        (Some(_), Some(_)) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    Some(root.locate("/source/database")),
                    "a source reads a file (`path`) or a query (`database`), not both",
                )
                .with_hint("keep one of them"),
            );
            None
        }
        (None, None) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    Some(root.locate("/source")),
                    "the source needs `path` (a file) or `database` with `query` (a SQL query)",
                )
                .with_hint("for example `path: data/users.csv`"),
            );
            None
        }
        (Some(path), None) => {
            for (field, given) in query_fields {
                if given {
                    diagnostics.push(
                        Diagnostic::error(
                            file,
                            Some(root.locate_key("/source", field)),
                            format!(
                                "`{field}` belongs to a query source, and this one reads a file"
                            ),
                        )
                        .with_hint("remove it, or replace `path` with `database`"),
                    );
                }
            }
            let file_source = file_source(
                file,
                root,
                (path, spec.format, spec.poll_seconds),
                folder,
                diagnostics,
            );
            Some(Source::File(FileSource {
                timezone: timezone?,
                ..file_source?
            }))
        }
        (None, Some(database)) => {
            let source = query_source(
                file,
                root,
                spec,
                database,
                (folder, credentials),
                diagnostics,
            );
            Some(Source::Query(QuerySource {
                timezone: timezone?,
                ..source?
            }))
        }
    }
}

/// A query source (`database` and `query`, perhaps `incremental`), in UTC until its time
/// zone is set.
fn query_source(
    file: &Path,
    root: &Node,
    spec: &SourceFile,
    database: &DatabaseRef,
    (folder, credentials): (&Path, Credentials),
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<QuerySource> {
    if spec.format.is_some() {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate_key("/source", "format")),
                "`format` belongs to a file source; a query's rows have their own types",
            )
            .with_hint("remove `format`"),
        );
    }
    let database = resolve_database(file, root, database, folder, credentials, diagnostics);
    let query = query_text(file, root, spec, folder, diagnostics);
    let incremental = spec.incremental.as_ref().and_then(|incremental| {
        let column = incremental.column.trim();
        if column.is_empty() {
            diagnostics.push(Diagnostic::error(
                file,
                Some(root.locate("/source/incremental/column")),
                "`incremental.column` is empty",
            ));
            return None;
        }
        Some(column.to_string())
    });
    if spec.incremental.is_some() && incremental.is_none() {
        return None;
    }
    if let Some(query) = &query
        && incremental.is_some()
        && let Some(database) = &database
        && !query.contains(database.dialect.placeholder())
    {
        let (placeholder, example) = match database.dialect {
            Dialect::Postgres => ("`$1`", "`WHERE $1::timestamptz IS NULL OR updated_at > $1`"),
            Dialect::Mysql => (
                "`?` (each `?` gets the same value)",
                "`WHERE ? IS NULL OR updated_at > ?`",
            ),
        };
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/source/incremental")),
                format!("with `incremental`, the query must use {placeholder}: each run binds the highest value delivered so far to it"),
            )
            .with_hint(format!("for example {example}")),
        );
        return None;
    }
    Some(QuerySource {
        database: database?,
        query: query?,
        incremental,
        timezone: chrono_tz::Tz::UTC,
    })
}

/// The SQL of a query source: `query`, or the file `query_file` names.
fn query_text(
    file: &Path,
    root: &Node,
    spec: &SourceFile,
    folder: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<String> {
    let text = match (&spec.query, &spec.query_file) {
        (Some(_), Some(_)) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    Some(root.locate("/source/query_file")),
                    "give either `query` or `query_file`, not both",
                )
                .with_hint("keep one of them"),
            );
            return None;
        }
        (None, None) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    Some(root.locate("/source/database")),
                    "a query source needs `query` (the SQL) or `query_file` (a file holding it)",
                )
                .with_hint("for example `query: SELECT user_id AS identity, email AS \"Email\" FROM users`"),
            );
            return None;
        }
        (Some(query), None) => query.clone(),
        (None, Some(query_file)) => {
            let path = folder.join(query_file);
            match crate::config::files::read_text_limited(
                &path,
                crate::config::files::MAX_CONFIG_BYTES,
            ) {
                Ok(text) => text,
                Err(problem) => {
                    diagnostics.push(
                        Diagnostic::error(
                            file,
                            Some(root.locate("/source/query_file")),
                            format!("cannot read query file `{}`: {problem}", path.display()),
                        )
                        .with_hint("a relative path is relative to the pipeline's folder"),
                    );
                    return None;
                }
            }
        }
    };
    if text.trim().is_empty() {
        diagnostics.push(Diagnostic::error(
            file,
            Some(root.locate("/source/query")),
            "the query is empty",
        ));
        return None;
    }
    Some(text)
}

/// A file source's path, format and compression (the zone is the caller's).
fn file_source(
    file: &Path,
    root: &Node,
    (written, format, poll_seconds): (&str, Option<SourceFormat>, Option<u32>),
    folder: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<FileSource> {
    let path = match Location::of(Path::new(written)) {
        Ok(Location::Object(_)) => PathBuf::from(written),
        Ok(Location::Local(_)) => folder.join(written),
        Err(problem) => {
            diagnostics.push(
                Diagnostic::error(file, Some(root.locate("/source/path")), problem).with_hint(
                    "write a path on this machine, or an S3 address: `s3://bucket/exports/users.csv`",
                ),
            );
            return None;
        }
    };
    let lower = written.to_lowercase();
    let (compression, inner) = if let Some(inner) = lower.strip_suffix(".gz") {
        (Compression::Gzip, inner)
    } else if let Some(inner) = lower.strip_suffix(".zst") {
        (Compression::Zstd, inner)
    } else {
        (Compression::None, lower.as_str())
    };
    let guessed = if inner.ends_with(".csv") {
        Some(SourceFormat::Csv)
    } else if inner.ends_with(".tsv") || inner.ends_with(".tab") {
        Some(SourceFormat::Tsv)
    } else if inner.ends_with(".jsonl") || inner.ends_with(".ndjson") {
        Some(SourceFormat::Jsonl)
    } else if inner.ends_with(".parquet") || inner.ends_with(".parq") {
        Some(SourceFormat::Parquet)
    } else {
        None
    };
    let Some(format) = format.or(guessed) else {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/source/path")),
                format!("cannot tell the format of `{written}` from its name"),
            )
            .with_hint(
                "add `format: csv`, `format: tsv`, `format: jsonl` or `format: parquet` under `source`",
            ),
        );
        return None;
    };
    if format == SourceFormat::Parquet && compression != Compression::None {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/source/path")),
                format!("`{written}`: a Parquet file compresses its own columns and cannot be read through .gz or .zst"),
            )
            .with_hint("decompress the file first"),
        );
        return None;
    }
    let object = Location::is_object(&path);
    Some(FileSource {
        path,
        format,
        compression,
        timezone: chrono_tz::Tz::UTC,
        projection: None,
        poll: poll_seconds
            .map(u64::from)
            .or(object.then_some(DEFAULT_OBJECT_POLL_SECONDS))
            .map(std::time::Duration::from_secs),
    })
}

/// How often a bucket is listed for arrivals when `poll_seconds` is not given.
const DEFAULT_OBJECT_POLL_SECONDS: u64 = 60;

/// An IANA time zone by name, or an error at `pointer` with a suggestion.
pub(super) fn time_zone(
    file: &Path,
    root: &Node,
    pointer: &str,
    name: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<chrono_tz::Tz> {
    match chrono_tz::Tz::from_str(name) {
        Ok(zone) => Some(zone),
        Err(_) => {
            let diagnostic = Diagnostic::error(
                file,
                Some(root.locate(pointer)),
                format!("unknown time zone `{name}`"),
            );
            let names = chrono_tz::TZ_VARIANTS.iter().map(|zone| zone.name());
            diagnostics.push(match did_you_mean(name, names) {
                Some(suggestion) => diagnostic.with_hint(match renamed_zone(suggestion) {
                    Some(current) => format!(
                        "did you mean `{current}`? (`{suggestion}` is its old name, kept as an alias)"
                    ),
                    None => format!("did you mean `{suggestion}`?"),
                }),
                None => diagnostic.with_hint(
                    "use an IANA name such as `UTC`, `Asia/Kolkata` or `America/New_York`",
                ),
            });
            None
        }
    }
}

/// The current name of a renamed time zone, for zones people still type by their old name
/// (the IANA database's `backward` file keeps each old name as a link to the new one).
fn renamed_zone(old: &str) -> Option<&'static str> {
    RENAMED
        .iter()
        .find(|(name, _)| *name == old)
        .map(|(_, current)| *current)
}

/// Old time zone names and their current ones (tzdata `backward`).
const RENAMED: [(&str, &str); 16] = [
    ("Asia/Calcutta", "Asia/Kolkata"),
    ("Asia/Saigon", "Asia/Ho_Chi_Minh"),
    ("Asia/Katmandu", "Asia/Kathmandu"),
    ("Asia/Rangoon", "Asia/Yangon"),
    ("Asia/Dacca", "Asia/Dhaka"),
    ("Asia/Ulan_Bator", "Asia/Ulaanbaatar"),
    ("Asia/Macao", "Asia/Macau"),
    ("Asia/Thimbu", "Asia/Thimphu"),
    ("Asia/Ujung_Pandang", "Asia/Makassar"),
    ("Europe/Kiev", "Europe/Kyiv"),
    ("America/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ("America/Indianapolis", "America/Indiana/Indianapolis"),
    ("Atlantic/Faeroe", "Atlantic/Faroe"),
    ("Pacific/Truk", "Pacific/Chuuk"),
    ("Pacific/Ponape", "Pacific/Pohnpei"),
    ("Africa/Asmera", "Africa/Asmara"),
];

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    #[test]
    fn every_renamed_zone_and_its_current_name_exist() {
        for (old, current) in super::RENAMED {
            assert_eq!(super::renamed_zone(old), Some(current));
            assert!(chrono_tz::Tz::from_str(old).is_ok(), "{old}");
            assert!(chrono_tz::Tz::from_str(current).is_ok(), "{current}");
        }
        assert_eq!(super::renamed_zone("Asia/Kolkata"), None);
    }
}
