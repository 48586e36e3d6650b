//! Semantic checks that turn the serde types of [`super::file`] into a [`Pipeline`]: the
//! file read and schema-checked here, each section checked by its own module.

use std::path::Path;

use super::diagnostic::Diagnostic;
use super::file::{
    AudienceFile, ChangesFile, ConnectionRef, NotificationFile, OutputFile, Rerun, ScheduleFile,
    SegmentFile, SegmentMode, SendMode, SourceFile, TargetFile, ThreadCountFile, TriggerKind,
};
use super::model::{
    CustomList, Metadata, OnInvalidRecord, Pipeline, Send, Source, SourceFormat, ThreadCount,
};
use super::schema::{self, FileKind};
use super::yaml::{self, Node};
use super::{Credentials, Loaded, Parts, notifications};

mod connection;
mod output;
mod schedule;
mod source;
mod target;

use connection::resolve_connection;
use output::build_output;
use schedule::{build_schedule, check_trigger};
use source::build_source;
use target::build_target;

const DEFAULT_THREAD_COUNT: usize = 5;
const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 60;
/// Days an event's fingerprint is kept after its `ts`, unless `changes.event_days` says.
const DEFAULT_EVENT_DAYS: u32 = 90;

/// A parsed YAML file that matched its schema.
struct Parsed<T> {
    root: Node,
    value: T,
}

/// Reads, parses and schema-checks a YAML file, then deserializes it.
fn parse_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: FileKind,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Parsed<T>> {
    let root = read_tree(path, diagnostics)?;
    let shape_errors = schema::check(path, &root, kind);
    if !shape_errors.is_empty() {
        diagnostics.extend(shape_errors.into_iter().map(|error| error.diagnostic));
        return None;
    }
    match serde_json::from_value::<T>(root.to_json()) {
        Ok(value) => Some(Parsed { root, value }),
        Err(error) => {
            diagnostics.push(Diagnostic::error(
                path,
                Some(root.position),
                error.to_string(),
            ));
            None
        }
    }
}

/// Reads and parses a YAML file into its positioned tree.
fn read_tree(path: &Path, diagnostics: &mut Vec<Diagnostic>) -> Option<Node> {
    let bytes = match super::files::read_limited(path, super::files::MAX_CONFIG_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            diagnostics.push(Diagnostic::error(
                path,
                None,
                format!("cannot read the file: {error}"),
            ));
            return None;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let offset = error.utf8_error().valid_up_to();
            let line = error.as_bytes()[..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            diagnostics.push(
                Diagnostic::error(
                    path,
                    Some(yaml::Position { line, col: 1 }),
                    "the file is not valid UTF-8",
                )
                .with_hint("save the file as UTF-8"),
            );
            return None;
        }
    };
    match yaml::parse(&text) {
        Ok(root) => Some(root),
        Err(error) => {
            diagnostics.push(
                Diagnostic::error(
                    path,
                    Some(error.position),
                    format!("invalid YAML: {}", error.message),
                )
                .with_hint("check indentation, quotes and brackets around this place"),
            );
            None
        }
    }
}

pub(super) fn load(path: &Path, credentials: Credentials) -> Loaded {
    let mut diagnostics = Vec::new();
    let Some(root) = read_tree(path, &mut diagnostics) else {
        return Loaded {
            pipeline: None,
            diagnostics,
            parts: Parts::default(),
        };
    };
    // Shape errors are reported, and the sections they do not touch are still checked,
    // so one run of `validate` shows every problem.
    let shape_errors = schema::check(path, &root, FileKind::Pipeline);
    let broken: Vec<String> = shape_errors
        .iter()
        .map(|error| error.pointer.clone())
        .collect();
    diagnostics.extend(shape_errors.into_iter().map(|error| error.diagnostic));
    let sections = Sections {
        json: root.to_json(),
        broken,
    };
    let mut parts = Parts {
        source_position: Some(root.locate("/source/path")),
        ..Parts::default()
    };
    let pipeline = build(
        path,
        &root,
        &sections,
        credentials,
        &mut parts,
        &mut diagnostics,
    );
    let failed = diagnostics.iter().any(Diagnostic::is_error);
    Loaded {
        pipeline: if failed { None } else { pipeline },
        diagnostics,
        parts,
    }
}

/// The top-level sections of a pipeline file, each usable when no shape error touches it.
struct Sections {
    json: serde_json::Value,
    broken: Vec<String>,
}

impl Sections {
    fn get<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let pointer = format!("/{name}");
        let touched = self.broken.iter().any(|broken| {
            broken.is_empty() || broken == &pointer || broken.starts_with(&format!("{pointer}/"))
        });
        if touched {
            return None;
        }
        serde_json::from_value(
            self.json
                .get(name)
                .cloned()
                .unwrap_or(serde_json::Value::Null),
        )
        .ok()
    }
}

/// A computed column with `{timestamp}` differs on every run, so with `send: changes`
/// every record counts as changed.
fn warn_of_templates_that_always_change(
    file: &Path,
    parts: &Parts,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let Some((output, positions)) = &parts.output else {
        return;
    };
    let template_positions = positions.get(output.columns.len()..).unwrap_or_default();
    for (string, position) in output.strings.iter().zip(template_positions) {
        let stamped = string
            .template
            .pieces
            .iter()
            .any(|piece| matches!(piece, crate::template::Piece::Timestamp(_)));
        if stamped {
            diagnostics.push(
                Diagnostic::warning(
                    file,
                    Some(*position),
                    format!(
                        "`{}` uses `{{timestamp}}`, which is new on every run: with `send: changes` every record will count as changed and be sent",
                        string.name
                    ),
                )
                .with_hint("leave `{timestamp}` out of the template, or use `send: all`"),
            );
        }
    }
}

/// Builds the checked pipeline from a file's sections, reporting every problem of every
/// section. Long, and better whole: each section is read without stopping at a broken one,
/// and only the end (`?`) gives up, so the checks across sections sit between the two.
fn build(
    file: &Path,
    root: &Node,
    sections: &Sections,
    credentials: Credentials,
    parts: &mut Parts,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Pipeline> {
    let folder = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = pipeline_name(file, diagnostics)?;

    let connection = sections
        .get::<ConnectionRef>("connection")
        .and_then(|connection| {
            resolve_connection(file, root, &connection, &folder, credentials, diagnostics)
        });
    let source = sections
        .get::<SourceFile>("source")
        .and_then(|source| build_source(file, root, &source, (&folder, credentials), diagnostics));
    let target = sections
        .get::<TargetFile>("target")
        .and_then(|target| build_target(file, root, &target, diagnostics));
    parts.source.clone_from(&source);
    parts.target = target;
    let schedule = sections
        .get::<Option<ScheduleFile>>("schedule")
        .map(|schedule| {
            schedule.map(|schedule| build_schedule(file, root, &schedule, diagnostics))
        });
    let output = sections.get::<Option<OutputFile>>("output").map(|output| {
        let events = matches!(target, Some(crate::config::Target::Events));
        output.and_then(|output| build_output(file, root, (&output, events), diagnostics))
    });
    if let Some(Some((mapping, positions))) = &output {
        parts.output = Some((mapping.clone(), positions.clone()));
    }
    let custom_list = sections
        .get::<TargetFile>("target")
        .and_then(|target| target.custom_list)
        .map(|list| CustomList {
            name: list.name,
            uploader_email: list.uploader_email.trim().to_string(),
            mode: list.segment_mode.unwrap_or(SegmentMode::Create),
        });
    if let (Some(list), Some(Some(Some(_)))) = (&custom_list, &schedule) {
        warn_of_a_scheduled_create(file, root, list, diagnostics);
    }
    // Each section is read without stopping at a broken one (no `?` until the end), so one
    // run of `validate` reports the problems of every section at once.
    let segment = sections.get::<Option<SegmentFile>>("segment");
    let audience = sections.get::<Option<AudienceFile>>("audience");
    let metadata = match (segment, audience) {
        (Some(segment), Some(audience)) => Some(Metadata {
            segment_id: segment.as_ref().and_then(|segment| segment.id.clone()),
            // For a custom list, the segment is the list unless the pipeline names another.
            segment_name: segment
                .and_then(|segment| segment.name)
                .or_else(|| custom_list.as_ref().map(|list| list.name.clone())),
            audience_id: audience.and_then(|audience| audience.id),
        }),
        _ => None,
    };
    let notifications = sections
        .get::<Option<Vec<NotificationFile>>>("notifications")
        .map(|entries| {
            notifications::build(
                file,
                root,
                entries.as_deref().unwrap_or_default(),
                credentials,
                diagnostics,
            )
        });
    let thread_count = sections.get::<Option<ThreadCountFile>>("thread_count");
    let skip_invalid_records = sections.get::<Option<bool>>("skip_invalid_records");
    let description = sections.get::<Option<String>>("description");
    let max_invalid_records = sections.get::<Option<i64>>("max_invalid_records");
    let max_invalid_ratio = sections.get::<Option<f64>>("max_invalid_ratio");
    let rerun = sections.get::<Option<Rerun>>("rerun");
    let send = sections.get::<Option<SendMode>>("send");
    let changes = sections.get::<Option<ChangesFile>>("changes");
    let trigger = sections.get::<Option<TriggerKind>>("trigger");
    if let Some(trigger) = trigger {
        check_trigger(
            file,
            root,
            trigger.unwrap_or(TriggerKind::Schedule),
            sections,
            diagnostics,
        );
    }
    // `Some(None)` is a field not written; `None` one written but broken (reported already).
    if matches!(skip_invalid_records, Some(None | Some(false))) {
        for (field, given) in [
            (
                "max_invalid_records",
                !matches!(max_invalid_records, Some(None)),
            ),
            (
                "max_invalid_ratio",
                !matches!(max_invalid_ratio, Some(None)),
            ),
        ] {
            if given {
                limit_without_skipping(file, root, field, diagnostics);
            }
        }
    }

    let thread_count = match thread_count? {
        None => ThreadCount::Fixed(DEFAULT_THREAD_COUNT),
        Some(ThreadCountFile::Fixed(count)) => ThreadCount::Fixed(count.clamp(1, 10) as usize),
        Some(ThreadCountFile::Adaptive(_)) => ThreadCount::Auto,
    };
    let (max_invalid_records, max_invalid_ratio) = (max_invalid_records?, max_invalid_ratio?);
    let on_invalid_record = if skip_invalid_records?.unwrap_or(false) {
        OnInvalidRecord::Skip
    } else {
        OnInvalidRecord::Stop
    };
    let event_days = changes?
        .and_then(|changes| changes.event_days)
        .unwrap_or(DEFAULT_EVENT_DAYS);
    let send = match send? {
        Some(SendMode::Changes) => Send::Changes { event_days },
        Some(SendMode::All) | None => Send::All,
    };
    if let Send::Changes { .. } = send {
        let at = root.locate_key("", "send");
        parts.send = Some((send, at));
        warn_of_templates_that_always_change(file, parts, diagnostics);
    }
    let schedule = match schedule? {
        Some(parsed) => Some(parsed?),
        None => None,
    };
    let output = output?.map(|(mapping, _)| mapping);
    let mut source = source?;
    if let (Source::File(file_source), Some(output)) = (&mut source, &output) {
        project_parquet_columns(file_source, output);
    }
    Some(Pipeline {
        name,
        file: file.to_path_buf(),
        description: description?,
        connection: connection?,
        source,
        target: target?,
        thread_count,
        on_invalid_record,
        schedule,
        output,
        metadata: metadata?,
        custom_list,
        max_invalid_records: max_invalid_records.map(|max| max.max(0) as u64),
        max_invalid_ratio: max_invalid_ratio.map(|ratio| ratio.clamp(0.0, 1.0)),
        rerun: rerun?.unwrap_or(Rerun::Changed),
        send,
        trigger: trigger?.unwrap_or(TriggerKind::Schedule),
        notifications: notifications??,
    })
}

/// The pipeline's name: its file name without `.yaml`, if that is plain text.
fn pipeline_name(file: &Path, diagnostics: &mut Vec<Diagnostic>) -> Option<String> {
    let stem = file.file_stem().unwrap_or_default();
    match stem.to_str() {
        Some(name) if crate::clevertap::rules::control_character(name).is_none() => {
            Some(name.to_string())
        }
        _ => {
            // Two such names would collapse into one, and share checkpoints and history.
            diagnostics.push(
                Diagnostic::error(
                    file,
                    None,
                    format!(
                        "the file name {stem:?} is not plain UTF-8 text, and a pipeline's name is its file name"
                    ),
                )
                .with_hint("rename the file with letters, digits, `-` and `_`"),
            );
            None
        }
    }
}

/// CleverTap refuses to create a segment that exists: a scheduled `create` fails from its
/// second run (docs/clevertap-api.md, second audit, 3).
fn warn_of_a_scheduled_create(
    file: &Path,
    root: &Node,
    list: &CustomList,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if list.mode != SegmentMode::Create {
        return;
    }
    diagnostics.push(
        Diagnostic::warning(
            file,
            Some(root.locate("/target/custom_list")),
            format!(
                "custom list `{}` is created on a schedule: CleverTap refuses to create a segment that exists, so every run after the first fails",
                list.name
            ),
        )
        .with_hint("create it once (a pipeline without `schedule`, or the dashboard), and schedule `segment_mode: update`"),
    );
}

/// An error budget (`field`) given to a pipeline that stops at the first invalid record.
fn limit_without_skipping(
    file: &Path,
    root: &Node,
    field: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    diagnostics.push(
        Diagnostic::error(
            file,
            Some(root.locate_key("", field)),
            format!("`{field}` needs `skip_invalid_records: true`: without it the run stops at the first invalid record"),
        )
        .with_hint("add `skip_invalid_records: true`, or remove the limit"),
    );
}

/// A Parquet file decodes only the columns the output mapping reads, when it sends only
/// those.
fn project_parquet_columns(
    source: &mut crate::config::model::FileSource,
    output: &crate::config::model::OutputMapping,
) {
    if source.format != SourceFormat::Parquet || output.export_all_columns {
        return;
    }
    let mut read: Vec<String> = output.columns.iter().map(|c| c.source.clone()).collect();
    for string in &output.strings {
        read.extend(string.template.columns().map(String::from));
    }
    read.sort();
    read.dedup();
    source.projection = Some(read);
}
