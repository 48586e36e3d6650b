//! Semantic checks that turn the serde types of [`super::file`] into a [`Pipeline`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::diagnostic::{Diagnostic, did_you_mean};
use super::file::{
    AudienceFile, CatchUp, ConnectionFile, ConnectionRef, ConnectionsFile, Entity,
    NotificationFile, OutputFile, Overlap, ProfileOperation, Region, Rerun, ScheduleFile,
    SegmentFile, SegmentMode, SourceFile, SourceFormat, TargetFile, TriggerKind,
};
use super::model::{
    AccountLimits, ColumnMapping, Connection, CustomList, Metadata, OnInvalidRecord, OutputMapping,
    Pipeline, Schedule, Source, StringColumn, Target,
};
use super::resolve::{
    SecretField, SecretSite, interpolate, is_http_url, is_plain_http_off_this_machine, secret,
};
use super::schema::{self, FileKind};
use super::yaml::{self, Node};
use super::{Credentials, Loaded, Parts, notifications};
use crate::template::Template;

const DEFAULT_THREAD_COUNT: usize = 5;
const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 60;

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

fn build(
    file: &Path,
    root: &Node,
    sections: &Sections,
    credentials: Credentials,
    parts: &mut Parts,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Pipeline> {
    let folder = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let stem = file.file_stem().unwrap_or_default();
    let name = match stem.to_str() {
        Some(name) if crate::clevertap::rules::control_character(name).is_none() => {
            name.to_string()
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
            return None;
        }
    };

    let connection = sections
        .get::<ConnectionRef>("connection")
        .and_then(|connection| {
            resolve_connection(file, root, &connection, &folder, credentials, diagnostics)
        });
    let source = sections
        .get::<SourceFile>("source")
        .and_then(|source| build_source(file, root, &source, &folder, diagnostics));
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
    let output = sections
        .get::<Option<OutputFile>>("output")
        .map(|output| output.and_then(|output| build_output(file, root, &output, diagnostics)));
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
    let segment = sections.get::<Option<SegmentFile>>("segment")?;
    let audience = sections.get::<Option<AudienceFile>>("audience")?;
    let metadata = Metadata {
        segment_id: segment.as_ref().and_then(|segment| segment.id.clone()),
        // For a custom list, the segment is the list unless the pipeline names another.
        segment_name: segment
            .and_then(|segment| segment.name)
            .or_else(|| custom_list.as_ref().map(|list| list.name.clone())),
        audience_id: audience.and_then(|audience| audience.id),
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
    let thread_count = sections.get::<Option<i64>>("thread_count")?;
    let skip_invalid_records = sections.get::<Option<bool>>("skip_invalid_records")?;
    let description = sections.get::<Option<String>>("description")?;
    let max_invalid_records = sections.get::<Option<i64>>("max_invalid_records")?;
    let max_invalid_ratio = sections.get::<Option<f64>>("max_invalid_ratio")?;
    let rerun = sections.get::<Option<Rerun>>("rerun")?;
    let trigger = sections
        .get::<Option<TriggerKind>>("trigger")?
        .unwrap_or(TriggerKind::Schedule);
    check_trigger(file, root, trigger, sections, diagnostics);
    if !skip_invalid_records.unwrap_or(false) {
        for (field, given) in [
            ("max_invalid_records", max_invalid_records.is_some()),
            ("max_invalid_ratio", max_invalid_ratio.is_some()),
        ] {
            if given {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        Some(root.locate_key("", field)),
                        format!("`{field}` needs `skip_invalid_records: true`: without it the run stops at the first invalid record"),
                    )
                    .with_hint("add `skip_invalid_records: true`, or remove the limit"),
                );
            }
        }
    }

    let thread_count =
        thread_count.map_or(DEFAULT_THREAD_COUNT, |count| count.clamp(1, 10) as usize);
    let on_invalid_record = if skip_invalid_records.unwrap_or(false) {
        OnInvalidRecord::Skip
    } else {
        OnInvalidRecord::Stop
    };
    let schedule = match schedule? {
        Some(parsed) => Some(parsed?),
        None => None,
    };
    Some(Pipeline {
        name,
        file: file.to_path_buf(),
        description,
        connection: connection?,
        source: source?,
        target: target?,
        thread_count,
        on_invalid_record,
        schedule,
        trigger,
        output: output?.map(|(mapping, _)| mapping),
        metadata,
        custom_list,
        max_invalid_records: max_invalid_records.map(|max| max.max(0) as u64),
        max_invalid_ratio: max_invalid_ratio.map(|ratio| ratio.clamp(0.0, 1.0)),
        rerun: rerun.unwrap_or(Rerun::Changed),
        notifications: notifications??,
    })
}

/// A `file_arrival` pipeline has no cron schedule; only it may have wildcards in its source.
fn check_trigger(
    file: &Path,
    root: &Node,
    trigger: TriggerKind,
    sections: &Sections,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let path = sections
        .get::<SourceFile>("source")
        .map(|source| source.path)
        .unwrap_or_default();
    let wildcards = crate::source::arrival::is_pattern(Path::new(&path));
    match trigger {
        TriggerKind::FileArrival => {
            if sections.json.get("schedule").is_some() {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        Some(root.locate_key("", "schedule")),
                        "a `trigger: file_arrival` pipeline runs when files arrive, not on a schedule",
                    )
                    .with_hint("remove `schedule`, or remove `trigger: file_arrival`"),
                );
            }
            let folder = Path::new(&path)
                .parent()
                .map(|folder| folder.to_string_lossy().into_owned());
            if folder.is_some_and(|folder| folder.contains(['*', '?'])) {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        Some(root.locate("/source/path")),
                        format!("`{path}`: only the file name may hold `*` or `?`, not the folder"),
                    )
                    .with_hint("write the folder out, e.g. `exports/vip_*.csv`"),
                );
            }
        }
        TriggerKind::Schedule if wildcards => diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/source/path")),
                format!("`{path}` has wildcards, but the pipeline reads one file"),
            )
            .with_hint("add `trigger: file_arrival` to send each new matching file once"),
        ),
        TriggerKind::Schedule => {}
    }
}

/// Checks the output mapping: names, and every template.
fn build_output(
    file: &Path,
    root: &Node,
    output: &OutputFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(OutputMapping, Vec<yaml::Position>)> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut check_name = |name: &str, pointer: String, diagnostics: &mut Vec<Diagnostic>| {
        if let Err(violation) = crate::clevertap::rules::check_key(name) {
            diagnostics.push(Diagnostic::error(
                file,
                Some(root.locate(&pointer)),
                violation.message,
            ));
        }
        if let Some((_, first)) = names.iter().find(|(existing, _)| existing == name) {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    Some(root.locate(&pointer)),
                    format!("the output has two columns named `{name}`"),
                )
                .with_hint(format!("the first is at {first}")),
            );
        }
        let at = root.locate(&pointer);
        names.push((name.to_string(), format!("line {}", at.line)));
    };
    let mut columns = Vec::new();
    let mut positions = Vec::new();
    for (index, column) in output.columns.iter().flatten().enumerate() {
        let name = column.name.clone().unwrap_or_else(|| column.source.clone());
        let pointer = if column.name.is_some() {
            format!("/output/columns/{index}/name")
        } else {
            format!("/output/columns/{index}/source")
        };
        check_name(&name, pointer, diagnostics);
        positions.push(root.locate(&format!("/output/columns/{index}/source")));
        columns.push(ColumnMapping {
            source: column.source.clone(),
            name,
            kind: column.kind,
            array_operation: column.array_operation,
        });
    }
    let mut strings = Vec::new();
    for (index, string) in output.strings.iter().flatten().enumerate() {
        check_name(
            &string.name,
            format!("/output/strings/{index}/name"),
            diagnostics,
        );
        match Template::parse(&string.value) {
            Ok(template) => strings.push(StringColumn {
                name: string.name.clone(),
                template,
            }),
            Err(error) => {
                diagnostics.push(Diagnostic::error(
                    file,
                    Some(root.locate(&format!("/output/strings/{index}/value"))),
                    format!(
                        "template `{}`, at character {}: {}",
                        string.value,
                        error.offset + 1,
                        error.message
                    ),
                ));
            }
        }
    }
    // Returned even with errors, so the source's columns are still checked against it; the
    // errors keep the pipeline from loading.
    let mapping = OutputMapping {
        export_all_columns: output.export_all_columns.unwrap_or(true),
        columns,
        strings,
    };
    Some((mapping, positions))
}

fn build_source(
    file: &Path,
    root: &Node,
    spec: &SourceFile,
    folder: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Source> {
    let path = folder.join(&spec.path);
    let lower = spec.path.to_lowercase();
    let gzip = lower.ends_with(".gz");
    let inner = lower.trim_end_matches(".gz");
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
        gzip,
        timezone,
    })
}

/// An IANA time zone by name, or an error at `pointer` with a suggestion.
fn time_zone(
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

fn build_target(
    file: &Path,
    root: &Node,
    target: &TargetFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Target> {
    let operation = match target.entity {
        Entity::UserProfiles => Some(target.operation.unwrap_or(ProfileOperation::UploadProfiles)),
        Entity::UserEvents | Entity::CustomList => None,
    };
    match (target.entity, &target.custom_list) {
        (Entity::CustomList, None) => diagnostics.push(
            Diagnostic::error(file, Some(root.locate("/target/entity")), "`entity: custom_list` needs a `custom_list` block")
                .with_hint("add `custom_list: { name: VIP users, uploader_email: admin@example.com, segment_mode: create }` under `target`"),
        ),
        (Entity::CustomList, Some(list)) if !crate::clevertap::rules::is_email(list.uploader_email.trim()) => diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/target/custom_list/uploader_email")),
                format!("`{}` is not an email address", list.uploader_email),
            )
            .with_hint("give the email of a CleverTap user with the Admin role"),
        ),
        (Entity::UserProfiles | Entity::UserEvents, Some(_)) => diagnostics.push(
            Diagnostic::error(file, Some(root.locate_key("/target", "custom_list")), "`target.custom_list` applies only to `entity: custom_list`")
                .with_hint("remove `custom_list`, or set `entity: custom_list`"),
        ),
        _ => {}
    }
    if target.entity != Entity::UserProfiles && target.operation.is_some() {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate_key("/target", "operation")),
                "`target.operation` applies only to `entity: user_profiles`",
            )
            .with_hint("remove `operation`, or set `entity: user_profiles`"),
        );
    }
    if target.array_operation.is_some() && operation != Some(ProfileOperation::UploadProfiles) {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate_key("/target", "array_operation")),
                "`target.array_operation` applies only to `upload_profiles`",
            )
            .with_hint("only profile properties can be lists; remove `array_operation`"),
        );
    }
    let built = match operation {
        None if target.entity == Entity::CustomList => Target::CustomList,
        None => Target::Events,
        Some(ProfileOperation::UploadProfiles) => Target::Profiles {
            array_operation: target.array_operation.unwrap_or_default(),
        },
        Some(ProfileOperation::UploadDeviceTokens) => Target::DeviceTokens,
        Some(ProfileOperation::Demerge) => Target::Demerge,
        Some(ProfileOperation::UpdateSubscription) => Target::Subscriptions,
        Some(ProfileOperation::DisassociatePhone) => Target::DisassociatePhone,
        Some(ProfileOperation::DeleteProfiles) => Target::DeleteProfiles,
    };
    let confirmed = target.confirm_destructive.unwrap_or(false);
    if built.is_destructive() && !confirmed {
        let what = match built {
            Target::Demerge => {
                "`demerge` splits merged profiles apart again, and event data tied to them may be lost"
            }
            Target::DeleteProfiles => {
                "`delete_profiles` deletes each profile with its events and properties"
            }
            _ => {
                "`disassociate_phone` detaches each phone number from the profile that uses it as identity"
            }
        };
        diagnostics.push(
            Diagnostic::error(file, Some(root.locate("/target/operation")), format!("{what}; CleverTap cannot undo it"))
                .with_hint("add `confirm_destructive: true` under `target` to allow it, after `tapline run --dry-run` has shown which identities it affects"),
        );
    }
    if confirmed && !built.is_destructive() {
        diagnostics.push(
            Diagnostic::warning(
                file,
                Some(root.locate_key("/target", "confirm_destructive")),
                "`confirm_destructive` has no effect here",
            )
            .with_hint("only `demerge`, `disassociate_phone` and `delete_profiles` need it"),
        );
    }
    // Returned even with errors: its own checks (the source's columns) still run, and the
    // errors keep the pipeline from loading.
    Some(built)
}

fn build_schedule(
    file: &Path,
    root: &Node,
    spec: &ScheduleFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Schedule> {
    let cron = match croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(spec.cron.trim())
    {
        Ok(cron) => Some(cron),
        Err(error) => {
            diagnostics.push(
                Diagnostic::error(file, Some(root.locate("/schedule/cron")), format!("invalid cron expression `{}`: {error}", spec.cron))
                    .with_hint("use five fields `minute hour day-of-month month day-of-week`, e.g. `0 3 * * *`, or `@daily`"),
            );
            None
        }
    };
    let zone_name = spec.timezone.as_deref().unwrap_or("UTC");
    let timezone = time_zone(file, root, "/schedule/timezone", zone_name, diagnostics);
    let schedule = Schedule {
        expression: spec.cron.clone(),
        cron: cron?,
        timezone: timezone?,
        overlap: spec.overlap.unwrap_or(Overlap::Skip),
        catch_up: spec.catch_up.unwrap_or(CatchUp::Skip),
    };
    if crate::scheduler::next_fire(&schedule, chrono::Utc::now()).is_none() {
        diagnostics.push(
            Diagnostic::warning(
                file,
                Some(root.locate("/schedule/cron")),
                format!("cron expression `{}` never fires", spec.cron),
            )
            .with_hint("a date that does not exist (such as 31 February) never comes; check the day and month fields"),
        );
    }
    Some(schedule)
}

/// Where a connection was written: its file, tree, and JSON pointer within it.
struct ConnectionSite<'a> {
    file: PathBuf,
    root: &'a Node,
    pointer: String,
}

impl ConnectionSite<'_> {
    fn at(&self, field: &str) -> Option<yaml::Position> {
        Some(self.root.locate(&format!("{}/{field}", self.pointer)))
    }
}

fn resolve_connection(
    file: &Path,
    root: &Node,
    connection: &ConnectionRef,
    folder: &Path,
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Connection> {
    match connection {
        ConnectionRef::Inline(spec) => {
            let site = ConnectionSite {
                file: file.to_path_buf(),
                root,
                pointer: "/connection".into(),
            };
            finish_connection("inline", spec, &site, credentials, diagnostics)
        }
        ConnectionRef::Named(name) => {
            let path = ["connections.yaml", "connections.yml"]
                .iter()
                .map(|file| folder.join(file))
                .find(|candidate| candidate.exists());
            let Some(path) = path else {
                diagnostics.push(
                    Diagnostic::error(file, Some(root.locate("/connection")), format!("connection `{name}` needs a `connections.yaml` beside the pipeline, and there is none in `{}`", display_folder(folder)))
                        .with_hint("create connections.yaml with the connection, or write the connection inline"),
                );
                return None;
            };
            let connections =
                parse_file::<ConnectionsFile>(&path, FileKind::Connections, diagnostics)?;
            let Some(spec) = connections.value.0.get(name) else {
                let names: Vec<&str> = connections.value.0.keys().map(String::as_str).collect();
                let mut diagnostic = Diagnostic::error(
                    file,
                    Some(root.locate("/connection")),
                    format!(
                        "unknown connection `{name}`; {} defines {}",
                        path.display(),
                        names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                if let Some(suggestion) = did_you_mean(name, names.iter().copied()) {
                    diagnostic = diagnostic.with_hint(format!("did you mean `{suggestion}`?"));
                }
                diagnostics.push(diagnostic);
                return None;
            };
            let site = ConnectionSite {
                file: path.clone(),
                root: &connections.root,
                pointer: format!("/{}", name.replace('~', "~0").replace('/', "~1")),
            };
            finish_connection(name, spec, &site, credentials, diagnostics)
        }
    }
}

fn display_folder(folder: &Path) -> String {
    if folder.as_os_str().is_empty() {
        ".".into()
    } else {
        folder.display().to_string()
    }
}

fn finish_connection(
    name: &str,
    spec: &ConnectionFile,
    site: &ConnectionSite<'_>,
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Connection> {
    let file = site.file.as_path();
    let timeout = Duration::from_secs(
        spec.request_timeout_seconds
            .map_or(DEFAULT_REQUEST_TIMEOUT_SECONDS, |seconds| {
                seconds.clamp(1, 600) as u64
            }),
    );
    // The schema keeps the numbers in range.
    let mut limits = AccountLimits::default();
    if let Some(event_properties) = spec
        .limits
        .as_ref()
        .and_then(|limits| limits.event_properties)
    {
        limits.event_properties = event_properties.clamp(1, 1024) as usize;
    }
    let what = format!("the passcode of connection `{name}`");
    let passcode_site = SecretSite {
        file,
        at: &|field| site.at(field),
    };
    let passcode = secret(
        &SecretField {
            field: "passcode",
            what: &what,
            value: spec.passcode.as_deref(),
            value_file: spec.passcode_file.as_deref(),
        },
        &passcode_site,
        credentials,
        diagnostics,
    );
    let passcode = match passcode {
        Ok(Some(passcode)) => Some(passcode),
        Ok(None) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    site.at("account_id"),
                    format!("connection `{name}` has no passcode"),
                )
                .with_hint(
                    "add `passcode: ${CLEVERTAP_PASSCODE}` or `passcode_file: /path/to/passcode`",
                ),
            );
            return None;
        }
        // The other fields are still checked, so every problem is reported at once.
        Err(()) => None,
    };
    if credentials == Credentials::Ignore {
        return Some(Connection {
            name: name.to_string(),
            account_id: String::new(),
            passcode: passcode?,
            base_url: String::new(),
            request_timeout: timeout,
            limits,
        });
    }

    let mut failed = false;
    let mut resolve = |field: &str, text: &str| -> Option<String> {
        match interpolate(text) {
            Ok(value) => Some(value),
            Err(problem) => {
                diagnostics.push(
                    Diagnostic::error(file, site.at(field), problem.message)
                        .with_hint(problem.hint),
                );
                failed = true;
                None
            }
        }
    };
    let account_id = resolve("account_id", &spec.account_id);
    let endpoint = spec
        .endpoint
        .as_deref()
        .and_then(|text| resolve("endpoint", text));
    if failed {
        return None;
    }
    let (account_id, passcode) = (account_id?, passcode?);
    if account_id.trim().is_empty() {
        diagnostics.push(Diagnostic::error(
            file,
            site.at("account_id"),
            format!("connection `{name}` has an empty `account_id`"),
        ));
        return None;
    }
    let base_url = match endpoint {
        Some(endpoint) => match is_http_url(&endpoint) {
            true => {
                if is_plain_http_off_this_machine(&endpoint) {
                    diagnostics.push(
                        Diagnostic::warning(
                            file,
                            site.at("endpoint"),
                            format!(
                                "`endpoint` `{}` is plain http to another machine: the passcode and every record cross the network unencrypted",
                                super::model::redacted_url(&endpoint)
                            ),
                        )
                        .with_hint("use https://, or http:// only to a proxy on this machine (127.0.0.1)"),
                    );
                }
                endpoint.trim_end_matches('/').to_string()
            }
            false => {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        site.at("endpoint"),
                        format!("`endpoint` `{endpoint}` is not an http(s) URL"),
                    )
                    .with_hint(
                        "write it like `https://proxy.example.com` or `http://127.0.0.1:9000`",
                    ),
                );
                return None;
            }
        },
        None => {
            crate::clevertap::wire::region_base_url(spec.region.unwrap_or(Region::Eu1)).to_string()
        }
    };
    Some(Connection {
        name: name.to_string(),
        account_id,
        passcode,
        base_url,
        request_timeout: timeout,
        limits,
    })
}
