//! `tapline init`: a first pipeline to start from — a commented pipeline file, a
//! `connections.yaml` reading the environment, the JSON Schemas editors complete from, and a
//! tiny sample data file — all of which `validate` accepts and `run --sandbox` uploads.

use std::path::{Path, PathBuf};

use super::error::{Error, Outcome};
use super::terminal::outln;
use super::{Exit, printed};

/// What the first pipeline writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Starter {
    /// User profiles from a CSV file (`upload_profiles`).
    UserProfiles,
    /// Events from a CSV file.
    UserEvents,
    /// A custom-list audience (a segment of identities).
    CustomList,
}

impl Starter {
    /// The pipeline's name (its file stem) unless `--name` gives one.
    fn default_name(self) -> &'static str {
        match self {
            Starter::UserProfiles => "profiles",
            Starter::UserEvents => "events",
            Starter::CustomList => "audience",
        }
    }

    /// The pipeline file for `name`, reading `data/<name>.csv`.
    fn pipeline(self, name: &str) -> String {
        let (description, target) = match self {
            Starter::UserProfiles => (
                "User profiles",
                "target:\n  entity: user_profiles\n  operation: upload_profiles      # or upload_device_tokens, demerge, update_subscription, ...\n  array_operation: replace        # a JSON-array value replaces the list property (or: append, remove)\n",
            ),
            Starter::UserEvents => (
                "Events",
                "target:\n  entity: user_events             # needs `identity` (or `objectId`) and `evtName`; `ts` is optional\noutput:                           # CSV values are text: say which columns are numbers\n  columns:\n    - { source: Amount, name: Amount, type: number }\n",
            ),
            Starter::CustomList => (
                "An audience as a CleverTap custom-list segment",
                "target:\n  entity: custom_list             # needs `identity`; `type` is i (identity, the default) or g (CleverTap ID)\n  custom_list:\n    name: My audience\n    uploader_email: admin@example.com   # must be an admin of your CleverTap account\n    segment_mode: create          # the first upload; later refreshes use `update`\n",
            ),
        };
        format!(
            "# yaml-language-server: $schema=pipeline.schema.json\n\
# A tapline pipeline: its name is the file name ({name}). Check it with\n\
#   tapline validate {{dir}}\n\
# try it against a local CleverTap sandbox with\n\
#   tapline run {{dir}}/{name}.yaml --sandbox\n\
# and send it for real once connections.yaml has your account (`tapline schema --markdown`\n\
# lists every field; so does your editor, from the schema on the first line).\n\
description: {description} from data/{name}.csv\n\
connection: prod                  # a name from connections.yaml beside this file\n\
source:\n  path: data/{name}.csv           # relative to this file; .gz and .jsonl work too\n\
{target}\
thread_count: 5                   # requests in flight, 1..=10; `auto` adapts up to 15 where\n\
                                  # tapline is the account's only bulk writer\n\
skip_invalid_records: true        # skip bad rows (each in the rejects file) instead of stopping\n\
# schedule:                       # when `tapline daemon` runs it\n\
#   cron: \"0 3 * * *\"\n\
#   timezone: UTC\n"
        )
    }

    /// A few rows of sample data.
    fn sample(self) -> &'static str {
        match self {
            Starter::UserProfiles => {
                "identity,Name,Email,Phone,Plan\n\
u-1,Asha Rao,asha.rao@example.com,+919812345601,gold\n\
u-2,Ben Okafor,ben.okafor@example.com,+14155550102,silver\n\
u-3,Chen Wei,chen.wei@example.com,+6591234503,gold\n"
            }
            Starter::UserEvents => {
                "identity,evtName,ts,Amount,Currency\n\
u-1,Charged,2026-11-30T10:15:00Z,49.5,USD\n\
u-2,Product Viewed,2026-11-30T10:16:30Z,,\n\
u-1,Charged,2026-12-01T08:00:00Z,12,USD\n"
            }
            Starter::CustomList => "identity,type\nu-1,i\nu-2,i\nu-3,i\n",
        }
    }
}

const CONNECTIONS: &str = "# yaml-language-server: $schema=connections.schema.json\n\
# Named CleverTap connections for the pipelines in this folder. ${VAR} reads the environment,\n\
# so no secret is written here; passcode_file reads a file instead (systemd credentials).\n\
prod:\n  account_id: ${CLEVERTAP_ACCOUNT_ID}\n  passcode: ${CLEVERTAP_PASSCODE}\n  region: eu1                     # eu1 | in1 | sg1 | us1 | aps3 | mec1: your dashboard's region\n";

/// Writes the starter files into `dir`, refusing to overwrite any of them.
pub(super) fn init(dir: &Path, starter: Starter, name: Option<&str>) -> Outcome {
    let name = name.unwrap_or(starter.default_name());
    check_name(name)?;
    let files = starter_files(dir, starter, name);
    refuse_what_is_in_the_way(&files)?;
    for (path, contents) in &files {
        write_new(path, contents)?;
    }
    let pipeline_file = dir.join(format!("{name}.yaml"));
    let written = files
        .iter()
        .try_for_each(|(path, _)| outln!("wrote {}", path.display()))
        .and_then(|()| {
            outln!(
                "\nnext:\n  tapline validate {dir}\n  tapline run {pipeline} --sandbox\n  set CLEVERTAP_ACCOUNT_ID and CLEVERTAP_PASSCODE, then: tapline run {pipeline}",
                dir = dir.display(),
                pipeline = pipeline_file.display()
            )
        });
    Ok(printed(written, Exit::Success))
}

/// A pipeline's name must make a file name in any folder.
fn check_name(name: &str) -> Result<(), Error> {
    let usable = !name.is_empty()
        && name != "connections"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if usable {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "`{name}` cannot name a pipeline\n  hint: use letters, digits, `-` and `_` (and not `connections`)"
        )))
    }
}

/// The files `init` writes: the pipeline and its sample data, and the connections and
/// schemas a folder does not have yet (one that has them keeps them).
fn starter_files(dir: &Path, starter: Starter, name: &str) -> Vec<(PathBuf, String)> {
    let pipeline = starter
        .pipeline(name)
        .replace("{dir}", &dir.display().to_string());
    let schema = |value: &serde_json::Value| {
        serde_json::to_string_pretty(value).expect("a schema serializes") + "\n"
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        (dir.join(format!("{name}.yaml")), pipeline),
        (
            dir.join("data").join(format!("{name}.csv")),
            starter.sample().to_string(),
        ),
    ];
    for (file, contents) in [
        ("connections.yaml", CONNECTIONS.to_string()),
        (
            "pipeline.schema.json",
            schema(crate::config::schema::pipeline_schema()),
        ),
        (
            "connections.schema.json",
            schema(crate::config::schema::connections_schema()),
        ),
    ] {
        if !dir.join(file).exists() {
            files.push((dir.join(file), contents));
        }
    }
    files
}

/// Nothing is written when any of the files exists already: the error names them all.
fn refuse_what_is_in_the_way(files: &[(PathBuf, String)]) -> Result<(), Error> {
    let existing: Vec<&PathBuf> = files
        .iter()
        .map(|(path, _)| path)
        .filter(|path| path.exists())
        .collect();
    let Some((first, others)) = existing.split_first() else {
        return Ok(());
    };
    let also = if others.is_empty() {
        String::new()
    } else {
        let named: Vec<String> = others
            .iter()
            .map(|path| format!("`{}`", path.display()))
            .collect();
        format!(" (also in the way: {})", named.join(", "))
    };
    Err(Error::usage(format!(
        "`{}` exists; nothing was written{also}\n  hint: pick another pipeline name with `--name`, or another folder",
        first.display()
    )))
}

/// Writes a file that must not exist yet, with its folder.
fn write_new(path: &Path, contents: &str) -> Result<(), Error> {
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
        })
        .and_then(|mut file| std::io::Write::write_all(&mut file, contents.as_bytes()))
        .map_err(|error| Error::failed(format!("cannot write `{}`: {error}", path.display())))
}
