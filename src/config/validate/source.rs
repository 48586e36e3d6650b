//! The source: its path, format and time zone.

use crate::config::diagnostic::{Diagnostic, did_you_mean};
use crate::config::file::{SourceFile, SourceFormat};
use crate::config::model::{Compression, Source};
use crate::config::yaml::Node;
use std::path::Path;
use std::str::FromStr;

pub(super) fn build_source(
    file: &Path,
    root: &Node,
    spec: &SourceFile,
    folder: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Source> {
    let path = folder.join(&spec.path);
    let lower = spec.path.to_lowercase();
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
    } else {
        None
    };
    let Some(format) = spec.format.or(guessed) else {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/source/path")),
                format!("cannot tell the format of `{}` from its name", spec.path),
            )
            .with_hint("add `format: csv`, `format: tsv` or `format: jsonl` under `source`"),
        );
        return None;
    };
    let timezone = match &spec.timezone {
        None => chrono_tz::Tz::UTC,
        Some(name) => time_zone(file, root, "/source/timezone", name, diagnostics)?,
    };
    Some(Source {
        path,
        format,
        compression,
        timezone,
    })
}

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
                Some(suggestion) => diagnostic.with_hint(format!("did you mean `{suggestion}`?")),
                None => diagnostic.with_hint(
                    "use an IANA name such as `UTC`, `Asia/Kolkata` or `America/New_York`",
                ),
            });
            None
        }
    }
}
