//! `tapline validate` and `tapline schema`: every config problem at its line, no panic.

use crate::common;

use std::path::Path;

use common::*;

/// Writes one pipeline (plus files) in a fresh folder, validates it, and returns
/// (exit code, stderr).
fn validate(pipeline: &str, files: &[(&str, &[u8])]) -> (Option<i32>, String) {
    validate_with(pipeline, files, &[])
}

/// [`validate`] with more arguments (`--strict`).
fn validate_with(pipeline: &str, files: &[(&str, &[u8])], extra: &[&str]) -> (Option<i32>, String) {
    let workspace = Workspace::new();
    workspace.write("ok.csv", "identity,Name\nu1,a\n");
    workspace.write(
        "connections.yaml",
        "prod:\n  account_id: acc\n  passcode: ${TAPLINE_TEST_PASSCODE}\nliteral:\n  account_id: acc\n  passcode: written-here\n",
    );
    for (name, contents) in files {
        workspace.write(name, contents);
    }
    workspace.write("p.yaml", pipeline);
    let mut args = vec!["validate", "p.yaml"];
    args.extend_from_slice(extra);
    let output = tapline_with_env(
        workspace.dir.path(),
        &args,
        &[("TAPLINE_TEST_PASSCODE", "secret")],
    );
    (output.status.code(), stderr(&output))
}

/// Checks that validation fails with every expected `line:col: message` fragment.
fn check_errors(pipeline: &str, files: &[(&str, &[u8])], expected: &[&str]) {
    check_errors_with(pipeline, files, &[], expected);
}

/// [`check_errors`] with more arguments to `validate`.
fn check_errors_with(pipeline: &str, files: &[(&str, &[u8])], extra: &[&str], expected: &[&str]) {
    let (code, errors) = validate_with(pipeline, files, extra);
    assert_eq!(
        code,
        Some(2),
        "expected errors for:\n{pipeline}\ngot:\n{errors}"
    );
    for fragment in expected {
        assert!(
            errors.contains(fragment),
            "missing `{fragment}` in:\n{errors}"
        );
    }
    assert!(!errors.contains("panicked"), "{errors}");
}

const OK: &str = "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n";

#[test]
fn a_valid_pipeline_passes() {
    let (code, errors) = validate(OK, &[]);
    assert_eq!(code, Some(0), "{errors}");
}

#[test]
fn yaml_syntax_errors_point_at_the_place() {
    check_errors(
        "connection: prod\nsource: [unclosed\ntarget:\n  entity: user_profiles\n",
        &[],
        &["p.yaml:3:7: error: invalid YAML"],
    );
    check_errors(
        "connection: prod\nconnection: prod\n",
        &[],
        &["p.yaml:2:1: error: invalid YAML: duplicate key `connection`"],
    );
    check_errors("", &[], &["p.yaml:1:1: error: the pipeline file is empty"]);
    check_errors(
        "connection: prod\n---\nsource: x\n",
        &[],
        &["one YAML document"],
    );
}

#[test]
fn every_problem_is_reported_at_once_with_hints() {
    let pipeline = "connection: prd\nsource:\n  path: ok.csv\ntarget:\n  entity: user_event\nthred_count: 3\nskip_invalid_records: \"yes\"\nschedule:\n  cron: \"61 * * * *\"\n  timezone: Asia/Kolkatta\n";
    check_errors(
        pipeline,
        &[],
        &[
            "p.yaml:1:13: error: unknown connection `prd`",
            "hint: did you mean `prod`?",
            "p.yaml:5:11: error: `target.entity` cannot be `user_event`; expected one of `user_profiles`, `user_events`",
            "hint: did you mean `user_events`?",
            "p.yaml:6:1: error: unknown field `thred_count`",
            "hint: did you mean `thread_count`?",
            "p.yaml:7:23: error: `skip_invalid_records` must be `true` or `false`, found `yes`",
            "p.yaml:9:9: error: invalid cron expression `61 * * * *`",
            "p.yaml:10:13: error: unknown time zone `Asia/Kolkatta`",
            "hint: did you mean `Asia/Kolkata`?",
        ],
    );
}

#[test]
fn wrong_types_missing_fields_and_ranges() {
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\nthread_count: 11\n",
        &[],
        &["p.yaml:4:15: error: `thread_count` is 11, above the maximum 10"],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\nthread_count: 0\n",
        &[],
        &["`thread_count` is 0, below the minimum 1"],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\nthread_count: five\n",
        &[],
        &["`thread_count` must be a number from 1 to 10 or `auto`, found `five`"],
    );
    check_errors(
        "connection: prod\ntarget: {entity: user_profiles}\n",
        &[],
        &["p.yaml:1:1: error: missing field `source`"],
    );
    check_errors(
        "connection: prod\nsource: {}\ntarget: {entity: user_profiles}\n",
        &[],
        &["p.yaml:2:9: error: the source needs `path` (a file) or `database` with `query`"],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv, format: xml}\ntarget: {entity: user_profiles}\n",
        &[],
        &["`source.format` cannot be `xml`; expected one of `csv`, `tsv`, `jsonl`"],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profiles, operation: upload_profile}\n",
        &[],
        &["did you mean `upload_profiles`?"],
    );
    check_errors(
        "connection: [a]\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
        &["p.yaml:1:13: error: `connection` must be a connection name or a mapping"],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_events, array_operation: append}\n",
        &[],
        &["`target.array_operation` applies only to `upload_profiles`"],
    );
}

#[test]
fn connections_and_credentials() {
    check_errors(
        "connection:\n  account_id: acc\n  pascode: x\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
        &[
            "p.yaml:3:3: error: unknown field `connection.pascode`",
            "did you mean `passcode`?",
        ],
    );
    // What only the run needs (an unset variable, a missing secret file) fails `--strict`
    // (plain `validate` warns: `validate_warns_of_a_missing_passcode_file…`).
    check_errors_with(
        "connection:\n  account_id: ${TAPLINE_UNSET_ACCOUNT}\n  passcode: ${TAPLINE_TEST_PASSCODE}\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
        &["--strict"],
        &["p.yaml:2:15: error: environment variable `TAPLINE_UNSET_ACCOUNT` is not set"],
    );
    check_errors_with(
        "connection:\n  account_id: acc\n  passcode_file: nowhere.txt\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
        &["--strict"],
        &["p.yaml:3:18: error: passcode file", "does not exist"],
    );
    check_errors(
        "connection:\n  account_id: acc\n  passcode: ${TAPLINE_TEST_PASSCODE}\n  region: eu2\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
        &["`connection.region` cannot be `eu2`", "did you mean `eu1`?"],
    );
    check_errors(
        "connection:\n  account_id: acc\n  passcode: ${TAPLINE_TEST_PASSCODE}\n  endpoint: not a url\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
        &["p.yaml:4:13: error: `endpoint` `not a url` is not an http(s) URL"],
    );
    // A literal passcode is a warning, not an error.
    let (code, errors) = validate(
        "connection: literal\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
    );
    assert_eq!(code, Some(0), "{errors}");
    assert!(errors.contains("connections.yaml:6:13: warning: the passcode of connection `literal` is written in the file"), "{errors}");
    assert!(
        !errors.contains("written-here"),
        "the warning shows the passcode: {errors}"
    );
}

#[test]
fn source_files_are_checked() {
    check_errors(
        "connection: prod\nsource: {path: missing.csv}\ntarget: {entity: user_profiles}\n",
        &[],
        &["p.yaml:2:16: error: source file", "does not exist"],
    );
    check_errors(
        "connection: prod\nsource: {path: data.txt}\ntarget: {entity: user_profiles}\n",
        &[("data.txt", b"x")],
        &["cannot tell the format of `data.txt`", "format: csv"],
    );
    check_errors(
        "connection: prod\nsource: {path: empty.csv}\ntarget: {entity: user_profiles}\n",
        &[("empty.csv", b"")],
        &["is empty: it has no header row"],
    );
    check_errors(
        "connection: prod\nsource: {path: names.csv}\ntarget: {entity: user_events}\n",
        &[("names.csv", b"Name,ts\nx,1\n")],
        &[
            "has no `evtName` column",
            "has no identity column",
            "the columns are `Name`, `ts`",
        ],
    );
    check_errors(
        "connection: prod\nsource: {path: dup.csv}\ntarget: {entity: user_profiles}\n",
        &[("dup.csv", b"identity,identity\n")],
        &["names column `identity` twice"],
    );
    check_errors(
        "connection: prod\nsource: {path: bad.yaml.csv}\ntarget: {entity: user_profiles}\n",
        &[("bad.yaml.csv", b"\xff\xfe,identity\n")],
        &["invalid UTF-8"],
    );
    let (code, errors) = validate(
        "connection: prod\nsource: {path: head.csv}\ntarget: {entity: user_profiles}\n",
        &[("head.csv", b"identity,Name\n")],
    );
    assert_eq!(code, Some(0), "a header-only file is valid: {errors}");
}

#[test]
fn a_pipeline_file_that_is_not_utf8_or_not_yaml_fails_cleanly() {
    check_errors("connection: \u{0}prod\n", &[], &["p.yaml:"]);
    let workspace = Workspace::new();
    workspace.write("p.yaml", b"connection: \xff\n");
    let output = tapline(workspace.dir.path(), &["validate", "p.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("p.yaml:1:1: error: the file is not valid UTF-8"),
        "{}",
        stderr(&output)
    );
    // A missing file has no line to point at; the other files are still checked.
    workspace.write("ok.csv", "identity\nu1\n");
    workspace.write(
        "broken.yaml",
        "connection: {account_id: a, passcode: b}\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\nthread_count: 20\n",
    );
    let output = tapline(
        workspace.dir.path(),
        &["validate", "nope.yaml", "broken.yaml"],
    );
    assert_eq!(output.status.code(), Some(2));
    let errors = stderr(&output);
    assert!(
        errors.contains("nope.yaml: error: no such file or folder\n"),
        "{errors}"
    );
    assert!(
        errors.contains("broken.yaml:4:15: error: `thread_count` is 20"),
        "{errors}"
    );
    assert!(errors.contains("2 errors found"), "{errors}");
}

#[test]
fn a_hint_does_not_repeat_what_its_message_says() {
    let (_, errors) = validate(
        "connection: prd\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
    );
    assert!(
        errors.contains(
            "p.yaml:1:13: error: unknown connection `prd`\n  hint: did you mean `prod`?\n"
        ),
        "{errors}"
    );
    // Without a likely typo, the message names what there is.
    let (_, errors) = validate(
        "connection: staging\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\n",
        &[],
    );
    assert!(
        errors
            .contains("unknown connection `staging`; connections.yaml defines `literal`, `prod`\n"),
        "{errors}"
    );
}

#[test]
fn a_broken_field_does_not_hide_the_problems_of_the_others() {
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profiles}\nthread_count: 20\nmax_invalid_ratio: 0.1\nrerun: sometimes\n",
        &[],
        &[
            "p.yaml:4:15: error: `thread_count` is 20, above the maximum 10",
            "p.yaml:5:1: error: `max_invalid_ratio` needs `skip_invalid_records: true`",
            "p.yaml:6:8: error: `rerun` cannot be `sometimes`",
        ],
    );
}

#[test]
fn next_daemon_and_history_say_where_they_looked() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    for args in [
        &["next", "--dir", "missing"][..],
        &["daemon", "--dir", "missing"],
    ] {
        let output = tapline(dir, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let errors = stderr(&output);
        assert_eq!(
            errors.matches("no such folder").count(),
            1,
            "said once: {errors}"
        );
        assert!(errors.starts_with("error: `missing`: no such folder\n  hint: give the folder of pipeline files with `--dir DIR`"), "{errors}");
    }
    let output = tapline(dir, &["history", "--dir", "."]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), "");
    let errors = stderr(&output);
    assert!(
        errors.contains("no state store `./.tapline/state.db`") && errors.contains("--state-dir"),
        "{errors}"
    );
    let output = tapline(dir, &["history", "--dir", ".", "--json"]);
    assert_eq!(stdout(&output), "[]\n");
}

#[test]
fn run_refuses_an_invalid_pipeline_with_exit_2() {
    let workspace = Workspace::new();
    workspace.write(
        "p.yaml",
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profile}\n",
    );
    let output = tapline(workspace.dir.path(), &["run", "p.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("p.yaml:3:18: error"),
        "{}",
        stderr(&output)
    );
    let output = tapline(workspace.dir.path(), &["run"]);
    assert_eq!(output.status.code(), Some(2), "usage error");
}

#[test]
fn the_shipped_examples_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = tapline_with_env(
        root,
        &["validate"],
        &[
            ("CLEVERTAP_ACCOUNT_ID", "acc"),
            ("CLEVERTAP_PASSCODE", "pass"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("ok  pipelines/vip_profiles.yaml"),
        "{}",
        stdout(&output)
    );
    // Without the environment (a CI job checking pipeline files), validate warns which
    // variables the run will need and passes; `--strict` makes that an error.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(["validate", "pipelines"])
        .current_dir(root)
        .env_clear()
        .output()
        .expect("tapline runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "warning: environment variable `CLEVERTAP_ACCOUNT_ID` is not set; `tapline run` will need it"
        ),
        "{}",
        stderr(&output)
    );
    let output = tapline(root, &["validate", "--strict"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("error: environment variable `CLEVERTAP_ACCOUNT_ID` is not set"),
        "{}",
        stderr(&output)
    );
    // A run still refuses to start without them.
    let output = tapline(root, &["run", "pipelines/vip_profiles.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("error: environment variable `CLEVERTAP_ACCOUNT_ID` is not set"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn validate_warns_of_a_missing_passcode_file_and_strict_refuses_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("people.csv"), "identity\nu1\n").expect("write");
    std::fs::write(
        dir.path().join("p.yaml"),
        "connection:\n  account_id: acc\n  passcode_file: /run/credentials/tapline/passcode\nsource: {path: people.csv}\ntarget: {entity: user_profiles}\n",
    )
    .expect("write");
    let output = tapline(dir.path(), &["validate", "p.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("p.yaml:3:18: warning: passcode file `/run/credentials/tapline/passcode` does not exist; `tapline run` will need it"),
        "{}",
        stderr(&output)
    );
    let output = tapline(dir.path(), &["validate", "--strict", "p.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let output = tapline(dir.path(), &["run", "p.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read passcode file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_checked_in_schema_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (args, file) in [
        (&["schema"][..], "schemas/pipeline.schema.json"),
        (
            &["schema", "--connections"][..],
            "schemas/connections.schema.json",
        ),
    ] {
        let output = tapline(root, args);
        assert_eq!(output.status.code(), Some(0));
        let checked_in = std::fs::read_to_string(root.join(file)).expect("schema file");
        assert_eq!(
            stdout(&output),
            checked_in,
            "{file} is stale: run `cargo run -- schema {}> {file}`",
            args[1..].join(" ")
        );
    }
}

#[test]
fn every_example_matches_the_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = jsonschema::validator_for(tapline::config::schema::pipeline_schema())
        .expect("schema compiles");
    let connections = jsonschema::validator_for(tapline::config::schema::connections_schema())
        .expect("schema compiles");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("pipelines")).expect("pipelines folder") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            path.ends_with("connections.yaml")
                || text
                    .starts_with("# yaml-language-server: $schema=../schemas/pipeline.schema.json"),
            "{} lacks the schema line",
            path.display()
        );
        let instance = tapline::config::yaml::parse(&text)
            .expect("valid YAML")
            .to_json();
        let validator = if path.ends_with("connections.yaml") {
            &connections
        } else {
            &pipeline
        };
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} files checked");
}

#[test]
fn schema_fields_are_described_for_users() {
    let schema = tapline::config::schema::pipeline_schema();
    let properties = schema["properties"].as_object().expect("properties");
    for (name, property) in properties {
        assert!(
            property["description"]
                .as_str()
                .is_some_and(|d| d.len() > 20),
            "`{name}` has no description"
        );
    }
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
}

#[test]
fn operations_need_their_columns() {
    check_errors(
        "connection: prod\nsource: {path: tokens.csv}\ntarget: {entity: user_profiles, operation: upload_device_tokens}\n",
        &[("tokens.csv", b"objectId,token\ng,t\n")],
        &[
            "has no `id` column, which device tokens need",
            "has no `type` column",
        ],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profiles, operation: demerge}\n",
        &[],
        &[
            "p.yaml:3:44: error: `demerge` splits merged profiles apart again",
            "hint: add `confirm_destructive: true`",
        ],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: user_profiles, operation: update_subscription, array_operation: append}\n",
        &[],
        &[
            "`target.array_operation` applies only to `upload_profiles`",
            "has no `type` column, which subscription changes need",
        ],
    );
}

#[test]
fn output_mapping_problems_point_at_their_place() {
    // A renamed column can be the identity; an unknown source column and a bad template are errors.
    let pipeline = "connection: prod\nsource: {path: crm.csv}\ntarget: {entity: user_profiles}\noutput:\n  columns:\n    - { source: user_id, name: identity }\n    - { source: emial, name: Email }\n  strings:\n    - { name: Campaign, value: \"vip-{segmnt_name}\" }\n    - { name: Email, value: x }\n";
    check_errors(
        pipeline,
        &[("crm.csv", b"user_id,email\nu1,a@b.co\n")],
        &[
            "p.yaml:7:17: error: `emial` is not a column of",
            "hint: did you mean `email`?",
            "p.yaml:9:32: error: template `vip-{segmnt_name}`, at character 5: unknown placeholder `{segmnt_name}`",
            "p.yaml:10:15: error: the output has two columns named `Email`",
        ],
    );
    let (code, errors) = validate(
        "connection: prod\nsource: {path: crm.csv}\ntarget: {entity: user_profiles}\noutput:\n  export_all_columns: false\n  columns:\n    - { source: user_id, name: identity }\n",
        &[("crm.csv", b"user_id,email\nu1,a@b.co\n")],
    );
    assert_eq!(
        code,
        Some(0),
        "a renamed identity column is enough: {errors}"
    );
    check_errors(
        "connection: prod\nsource: {path: crm.csv}\ntarget: {entity: user_profiles}\noutput:\n  columns:\n    - { source: user_id, type: datetime }\n",
        &[("crm.csv", b"user_id\nu1\n")],
        &["`output.columns.0.type` cannot be `datetime`"],
    );
}

#[test]
fn custom_lists_need_their_block() {
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget: {entity: custom_list}\n",
        &[],
        &["p.yaml:3:18: error: `entity: custom_list` needs a `custom_list` block"],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget:\n  entity: custom_list\n  custom_list: {name: VIP, uploader_email: not-an-email, segment_mode: replace}\n",
        &[],
        &[
            "`target.custom_list.segment_mode` cannot be `replace`; expected one of `create`, `update`",
        ],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget:\n  entity: custom_list\n  custom_list: {name: VIP, uploader_email: not-an-email}\n",
        &[],
        &["p.yaml:5:44: error: `not-an-email` is not an email address"],
    );
    check_errors(
        "connection: prod\nsource: {path: ok.csv}\ntarget:\n  entity: user_profiles\n  custom_list: {name: VIP, uploader_email: a@b.co}\n",
        &[],
        &["`target.custom_list` applies only to `entity: custom_list`"],
    );
}

#[test]
fn a_reader_that_goes_away_is_no_error_but_a_full_disk_is() {
    let binary = env!("CARGO_BIN_EXE_tapline");
    // `tapline schema | head -0`: the reading end is closed before tapline writes.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = std::process::Command::new(binary)
        .arg("schema")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("tapline runs");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    // `tapline schema > /dev/full`: the output is lost, and tapline says so.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let output = std::process::Command::new(binary)
        .arg("schema")
        .stdout(full)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("tapline runs");
    assert_eq!(output.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(errors.contains("cannot write the output"), "{errors}");
}

#[test]
fn rules_lists_each_rule_with_its_code_and_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = tapline(dir.path(), &["rules"]);
    assert_eq!(output.status.code(), Some(0));
    let printed = stdout(&output);
    assert!(
        printed.contains(" 516  Phone: `Phone` is `+`")
            && printed.contains(
                " 516  Phone: `Phone` is `+`, the country code and the number, at most 15 digits (E.164); no minimum length is documented\n      https://developer.clevertap.com/docs/upload-user-profiles-api\n"
            )
            && printed.contains("   —  deletion: ")
            && printed.contains(" 520  Age:"),
        "{printed}"
    );
}

#[test]
fn header_names_clevertap_refuses_are_errors_at_their_column() {
    let pipeline =
        "connection: prod\nsource: {path: people.csv}\ntarget: {entity: user_profiles}\n";
    check_errors(
        pipeline,
        &[("people.csv", b"identity,Plan.Tier,Name\nu1,gold,A\n")],
        &["people.csv:1:10: error: column `Plan.Tier`: name `Plan.Tier` contains `.`"],
    );
    let long = "k".repeat(121);
    check_errors(
        pipeline,
        &[("people.csv", format!("identity,{long}\nu1,x\n").as_bytes())],
        &[
            "people.csv:1:10: error: column `kkk",
            "longer than 120 bytes",
        ],
    );
    // Sent under another name, it is fine; a mapped name CleverTap refuses is an error at
    // the mapping.
    let (code, errors) = validate(
        "connection: prod\nsource: {path: people.csv}\ntarget: {entity: user_profiles}\noutput:\n  columns:\n    - {source: identity, name: identity}\n    - {source: Plan.Tier, name: Plan Tier}\n",
        &[("people.csv", b"identity,Plan.Tier\nu1,gold\n")],
    );
    assert_eq!(code, Some(0), "{errors}");
    check_errors(
        "connection: prod\nsource: {path: people.csv}\ntarget: {entity: user_profiles}\noutput:\n  columns:\n    - {source: identity, name: identity}\n    - {source: tier, name: Plan$Tier}\n",
        &[("people.csv", b"identity,tier\nu1,gold\n")],
        &["p.yaml:7:28: error: name `Plan$Tier` contains `$`"],
    );
    // A JSON Lines key, in the first record.
    check_errors(
        "connection: prod\nsource: {path: events.jsonl}\ntarget: {entity: user_events}\n",
        &[(
            "events.jsonl",
            b"{\"identity\":\"u1\",\"evtName\":\"Viewed\",\"a:b\":1}\n",
        )],
        &["events.jsonl:1:1: error: key `a:b`"],
    );
}

#[test]
fn a_template_reading_a_column_the_source_lacks_is_an_error_at_the_template() {
    check_errors(
        "connection: prod\nsource: {path: people.csv}\ntarget: {entity: user_profiles}\noutput:\n  strings:\n    - {name: Tag, value: \"x-{column:Plan}\"}\n",
        &[("people.csv", b"identity,plan\nu1,gold\n")],
        &[
            "p.yaml:6:26: error: `{column:Plan}` in the template of `Tag`: `",
            "has no column `Plan`",
            "hint: did you mean `plan`?",
        ],
    );
    let (code, errors) = validate(
        "connection: prod\nsource: {path: people.csv}\ntarget: {entity: user_profiles}\noutput:\n  strings:\n    - {name: Tag, value: \"x-{column:plan}\"}\n",
        &[("people.csv", b"identity,plan\nu1,gold\n")],
    );
    assert_eq!(code, Some(0), "{errors}");
}
