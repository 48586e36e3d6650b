//! Parquet files end to end: every type tapline reads (`tests/data/types.parquet`, made by
//! `tests/data/make_parquet.py` with pyarrow, two row groups, nulls in every column) arrives
//! as CleverTap wants it, row numbers stand for lines in the rejects file, only mapped
//! columns are read, and `send: changes` works on Parquet as on CSV.

use crate::common;

use common::*;
use serde_json::json;
use tapline::sandbox::SandboxConfig;

fn types_parquet(workspace: &Workspace) {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/types.parquet"
    ))
    .expect("tests/data/types.parquet");
    workspace.write("types.parquet", bytes);
}

#[test]
fn every_parquet_type_arrives_as_clevertap_wants_it() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    types_parquet(&workspace);
    workspace.pipeline(
        "pipeline",
        &sandbox,
        "source: {path: types.parquet, timezone: Asia/Kolkata}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 4, "{summary}");
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(
        profiles["p1"],
        json!({
            "Age": 31, "Visits": 10_000_000_000_i64, "Ratio": 0.5, "Score": 99.5, "VIP": true,
            // 1990-05-01 at midnight in Kolkata; timestamps are UTC instants.
            "DOB": "$D_641500200", "SeenMs": "$D_1714557600", "Balance": 12.5,
            "Interests": ["golf", "tennis"]
        })
    );
    assert_eq!(profiles["p2"]["SeenUs"], "$D_1714557601");
    assert_eq!(profiles["p2"]["Balance"], -0.05);
    assert_eq!(profiles["p2"]["Note"], "hello");
    assert_eq!(profiles["p3"]["SeenNs"], "$D_1714557602");
    assert_eq!(profiles["p3"]["DOB"], "$D_946665000");
    // NULLs are left out; a list's NULL elements too.
    assert_eq!(profiles["p2"].get("Age"), None);
    assert_eq!(profiles["p4"]["Interests"], json!(["chess"]));
    assert_eq!(profiles["p4"]["Note"], "ünïcode");
}

#[test]
fn row_numbers_stand_for_lines_and_only_mapped_columns_are_read() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    types_parquet(&workspace);
    // `Note` sent as `Email`: rows 2 ("hello") and 4 (in the second row group) are invalid.
    workspace.pipeline(
        "pipeline",
        &sandbox,
        "source: {path: types.parquet}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\noutput:\n  export_all_columns: false\n  columns:\n    - {source: identity, name: identity}\n    - {source: Note, name: Email}\n",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["skipped"], 2, "{summary}");
    let lines: Vec<u64> = rejects(workspace.dir.path(), &summary)
        .iter()
        .map(|entry| entry["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 4]);
    // The rejects file has the row as read: the mapped columns only.
    let entry = &rejects(workspace.dir.path(), &summary)[0];
    assert_eq!(entry["row"], json!({"identity": "p2", "Note": "hello"}));
}

#[test]
fn send_changes_and_rerun_work_on_parquet() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    types_parquet(&workspace);
    workspace.pipeline(
        "pipeline",
        &sandbox,
        "source: {path: types.parquet}\ntarget: {entity: user_profiles}\nsend: changes\n",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 4, "{summary}");
    // The same file: up to date; forced, every record is unchanged.
    let (_, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(summary["status"], "up_to_date", "{summary}");
    let (_, summary) = run_json(&workspace, &["pipeline.yaml", "--force"]);
    assert_eq!(summary["records"]["unchanged"], 4, "{summary}");
}

#[test]
fn a_misspelt_mapped_column_is_named_with_the_files_own_columns() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    types_parquet(&workspace);
    workspace.pipeline(
        "pipeline",
        &sandbox,
        "source: {path: types.parquet}\ntarget: {entity: user_profiles}\noutput:\n  export_all_columns: false\n  columns:\n    - {source: identity, name: identity}\n    - {source: Notes, name: Email}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "pipeline.yaml"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("`Notes` is not a column of"), "{text}");
    assert!(text.contains("did you mean `Note`?"), "{text}");
}

#[test]
fn a_file_that_is_not_parquet_is_a_clear_error() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("broken.parquet", "identity\nu1\n");
    workspace.pipeline(
        "pipeline",
        &sandbox,
        "source: {path: broken.parquet}\ntarget: {entity: user_profiles}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "pipeline.yaml"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("is not a Parquet file"), "{text}");
}

#[test]
fn a_damaged_file_fails_its_run_with_a_located_error_and_never_the_process() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    damaged_parquet(&workspace.path("damaged.parquet"));
    workspace.pipeline(
        "pipeline",
        &sandbox,
        "source: {path: damaged.parquet}\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(
        code,
        Some(1),
        "a failed run, not a crashed process: {summary}"
    );
    assert!(
        summary["stop_reason"]
            .to_string()
            .contains("`damaged.parquet` cannot be read past row 0"),
        "{summary}"
    );
    let output = tapline(workspace.dir.path(), &["history", "--dir", ".", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(runs[0]["status"], "failed", "{runs}");
}

#[test]
fn every_value_is_sent_exactly_or_refused_by_name() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // decimal(38, 2) past 2^53, and a decimal256 (a 32-byte FIXED_LEN_BYTE_ARRAY).
    let big = 123_456_789_012_345_678_901_234_i128;
    let wide = |value: i128| {
        let mut bytes = vec![if value < 0 { 0xff } else { 0 }; 16];
        bytes.extend_from_slice(&value.to_be_bytes());
        bytes
    };
    write_parquet(
        &workspace.path("values.parquet"),
        "message m {
            required binary identity (UTF8);
            required fixed_len_byte_array(16) Big (DECIMAL(38, 2));
            required fixed_len_byte_array(32) Wide (DECIMAL(70, 0));
            required binary Raw;
            required int64 Visits;
        }",
        &[
            texts(&["p1", "p2"]),
            ParquetColumn::Fixed(vec![
                big.to_be_bytes().to_vec(),
                1250_i128.to_be_bytes().to_vec(),
            ]),
            ParquetColumn::Fixed(vec![wide(1), wide(-big)]),
            ParquetColumn::Text(vec![b"text".to_vec(), vec![0xff, 0xfe]]),
            ParquetColumn::Int64(vec![1, 2]),
        ],
    );
    workspace.pipeline(
        "pipeline",
        &sandbox,
        "source: {path: values.parquet}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_counts_add_up(&summary);
    assert_eq!(summary["records"]["accepted"], 1, "{summary}");
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(
        profiles["p1"],
        json!({"Big": "1234567890123456789012.34", "Wide": 1, "Raw": "text", "Visits": 1}),
        "{code:?}"
    );
    // Binary that is not text is refused, naming the column.
    let rejected = rejects(workspace.dir.path(), &summary);
    assert_eq!(rejected[0]["line"], 2, "{rejected:?}");
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("column `Raw`") && reason.contains("not UTF-8 text"),
        "{reason}"
    );

    // A column given twice is refused, as a CSV header with one is.
    write_parquet(
        &workspace.path("twice.parquet"),
        "message m { required binary identity (UTF8); required binary identity (UTF8); }",
        &[texts(&["d1"]), texts(&["d2"])],
    );
    workspace.pipeline(
        "twice",
        &sandbox,
        "source: {path: twice.parquet}\ntarget: {entity: user_profiles}\n",
    );
    let output = tapline(workspace.dir.path(), &["run", "twice.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("twice.yaml:6:16: error: the header of `twice.parquet` has the column `identity` more than once"),
        "{}",
        stderr(&output)
    );
    assert!(sandbox.sandbox.profile("d2").is_none());
}

#[test]
fn a_file_of_values_over_the_limit_is_refused_before_its_pages_are_read() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // One 3 MiB value: a page three times the limit.
    write_parquet(
        &workspace.path("huge.parquet"),
        "message m { required binary identity (UTF8); required binary Note (UTF8); }",
        &[texts(&["u1"]), texts(&[&"x".repeat(3 << 20)])],
    );
    workspace.pipeline(
        "huge",
        &sandbox,
        "source: {path: huge.parquet}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let output = tapline(workspace.dir.path(), &["run", "huge.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("row group 1 (rows 1 to 1) holds values of column `Note` of 3 MiB on average, over the 1 MiB a value may be"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sandbox.inspect().requests, 0);
}
