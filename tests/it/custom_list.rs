//! Custom-list audiences end to end: the three-step flow against the sandbox.

use crate::common;

use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

fn pipeline(mode: &str, email: &str, extra: &str) -> String {
    format!(
        "source: {{path: audience.csv}}\ntarget:\n  entity: custom_list\n  custom_list: {{name: VIP users, uploader_email: {email}, segment_mode: {mode}}}\n{extra}"
    )
}

/// Runs the pipeline; `--force` because these tests send one file again under new settings.
fn run(workspace: &Workspace) -> (Option<i32>, Value) {
    let output = tapline(
        workspace.dir.path(),
        &["run", "list.yaml", "--json", "--force"],
    );
    (output.status.code(), common::summary(&output))
}

#[test]
fn create_then_create_again_fails_then_update_replaces() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "audience.csv",
        "identity,type,note\nu1,i,a\nu2,,b\n,,\nguid-3,G,c\n\"o'brien, jr\",i,d\n",
    );
    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline("create", "admin@example.com", ""),
    );

    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        summary["records"],
        serde_json::json!({"read": 5, "accepted": 4, "skipped": 1, "rejected": 0, "failed": 0})
    );
    assert_eq!(summary["requests"], 3);
    let seen = sandbox.inspect();
    let segment = &seen.segments["VIP users"];
    assert_eq!(summary["segment_id"], segment.id);
    assert_eq!(
        segment.lines,
        vec![
            "Type,Identity",
            "i,u1",
            "i,u2",
            "g,guid-3",
            "i,\"o'brien, jr\""
        ]
    );
    assert_eq!(
        (
            segment.identities,
            segment.uploads,
            segment.creator.as_str()
        ),
        (4, 1, "tapline")
    );
    assert_eq!(
        seen.presigned_with_passcode, 0,
        "the passcode went to the storage URL"
    );

    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(1), "{summary}");
    let reason = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("already exists"), "{reason}");
    assert_eq!(summary["records"]["accepted"], 0);
    assert_counts_add_up(&summary);

    workspace.write("audience.csv", "identity\nu9\n");
    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline("update", "admin@example.com", ""),
    );
    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(0), "{summary}");
    let segment = &sandbox.inspect().segments["VIP users"];
    assert_eq!((segment.uploads, segment.identities), (2, 1));
    assert_eq!(summary["segment_id"], segment.id);
}

#[test]
fn clevertap_refusals_fail_the_run_with_their_message() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("audience.csv", "identity\nu1\n\n\"u,2\"\n");
    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline("create", "someone@example.com", ""),
    );
    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(1), "{summary}");
    let reason = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("does not belong to a valid admin"),
        "{reason}"
    );
    // Every identity of the refused list is in the rejects file, at its own line.
    assert_counts_add_up(&summary);
    assert_eq!(summary["records"]["failed"], 2, "{summary}");
    let failed: Vec<(u64, Value, String)> = rejects(workspace.dir.path(), &summary)
        .into_iter()
        .filter(|entry| entry["outcome"] == "failed")
        .map(|entry| {
            (
                entry["line"].as_u64().unwrap(),
                entry["record"].clone(),
                entry["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        vec![
            (
                2,
                serde_json::json!({"type": "i", "identity": "u1"}),
                "not_sent".into()
            ),
            (
                4,
                serde_json::json!({"type": "i", "identity": "u,2"}),
                "not_sent".into()
            ),
        ]
    );
    // The history shows them as the run's first errors.
    let output = tapline(
        workspace.dir.path(),
        &[
            "history",
            "--dir",
            ".",
            "--run",
            summary["run_id"].as_str().unwrap(),
            "--json",
        ],
    );
    let recorded: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(recorded["first_errors"][0]["line"], 2, "{recorded}");
    assert_eq!(recorded["first_errors"][1]["line"], 4, "{recorded}");
    let spool = workspace.dir.path().join(".tapline/spool");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "the spool files are gone"
    );

    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline("update", "admin@example.com", ""),
    );
    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(1), "{summary}");
    assert!(
        summary["stop_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("No segment named `VIP users`"),
        "{summary}"
    );
    assert!(sandbox.inspect().segments.is_empty());
}

#[test]
fn invalid_rows_skip_or_stop_and_dry_run_sends_nothing() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("audience.csv", "identity,type\nu1,i\nu2,x\nu3,g\n");
    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline(
            "create",
            "admin@example.com",
            "skip_invalid_records: true\n",
        ),
    );
    let output = tapline(
        workspace.dir.path(),
        &["run", "list.yaml", "--dry-run", "--json"],
    );
    let summary = common::summary(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(summary["dry_run"]["records"], 2);
    let output = tapline(workspace.dir.path(), &["run", "list.yaml", "--dry-run"]);
    assert!(
        stdout(&output).contains("  requests  3 through connection `inline`: /get_custom_list_segment_url (an upload URL), a PUT of the list to that pre-signed URL, /upload_custom_list_segment_completed\n"),
        "{}",
        stdout(&output)
    );
    assert_eq!(sandbox.inspect().requests, 0);

    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["skipped"], 1);
    let rejects = rejects(workspace.dir.path(), &summary);
    assert_eq!(
        (rejects[0]["line"].as_u64(), rejects[0]["code"].as_str()),
        (Some(3), Some("invalid_record"))
    );
    assert_eq!(
        sandbox.inspect().segments["VIP users"].lines,
        vec!["Type,Identity", "i,u1", "g,u3"]
    );

    // Without skipping, the invalid row stops the upload and no segment is registered.
    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline("update", "admin@example.com", ""),
    );
    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(1), "{summary}");
    assert!(
        summary["stop_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("line 3"),
        "{summary}"
    );
    assert_counts_add_up(&summary);
    assert_eq!(
        sandbox.inspect().segments["VIP users"].uploads,
        1,
        "the update was not registered"
    );
}

#[test]
fn the_custom_list_examples_create_the_segment_once_and_refresh_it_on_schedule() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Created once, then refreshed as the nightly schedule does, twice: every run succeeds.
    let output = tapline(
        root,
        &[
            "run",
            "pipelines/vip_audience_create.yaml",
            "pipelines/vip_audience.yaml",
            "pipelines/vip_audience.yaml",
            "--sandbox",
            "--json",
        ],
    );
    let summaries: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(output.status.code(), Some(0), "{summaries:?}");
    let runs: Vec<&serde_json::Value> = summaries
        .iter()
        .filter(|summary| summary.get("pipeline").is_some())
        .collect();
    assert_eq!(runs.len(), 3, "{summaries:?}");
    for summary in &runs {
        assert_eq!(summary["status"], "succeeded", "{summary}");
        assert!(summary["segment_id"].is_i64(), "{summary}");
    }
    // The summary and the sandbox's line agree: three requests (the URL, the list's upload
    // to it, the registration), and the segment the list became.
    let output = tapline(
        root,
        &["run", "pipelines/vip_audience_create.yaml", "--sandbox"],
    );
    let printed = stdout(&output);
    assert!(printed.contains("  requests  3 (0 retries)"), "{printed}");
    assert!(
        printed.contains(
            "sandbox received 3 requests and accepted custom list `VIP users` as segment 1001 (4 identities)"
        ),
        "{printed}"
    );
    // The scheduled one never creates: `validate` warns of a scheduled `create`.
    let output = tapline_with_env(
        root,
        &["validate", "pipelines/vip_audience.yaml", "--strict"],
        &[("CLEVERTAP_ACCOUNT_ID", "A"), ("CLEVERTAP_PASSCODE", "p")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let workspace = Workspace::new();
    workspace.write(
        "audience.csv",
        "identity
u1
",
    );
    workspace.write(
        "nightly.yaml",
        "connection: {account_id: A, passcode_file: passcode.txt}
source: {path: audience.csv}
target:
  entity: custom_list
  custom_list: {name: VIP, uploader_email: admin@example.com, segment_mode: create}
schedule: {cron: \"30 2 * * *\"}
",
    );
    let output = tapline(workspace.dir.path(), &["validate", "nightly.yaml"]);
    assert!(
        stderr(&output).contains("every run after the first fails")
            && stderr(&output).contains("schedule `segment_mode: update`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn malformed_rows_are_reported_at_their_own_line() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("audience.csv", "identity,type\nu1,i\nu2,i,extra\nu3,i\n");
    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline(
            "create",
            "admin@example.com",
            "skip_invalid_records: true\n",
        ),
    );
    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        summary["records"],
        serde_json::json!({"read": 3, "accepted": 2, "skipped": 1, "rejected": 0, "failed": 0})
    );
    let rejects = rejects(workspace.dir.path(), &summary);
    assert_eq!(
        (rejects[0]["line"].as_u64(), rejects[0]["code"].as_str()),
        (Some(3), Some("malformed_row"))
    );
}

#[test]
fn the_list_reaches_s3_with_its_exact_length_and_nothing_else() {
    // The sandbox's pre-signed URL is as strict as S3, and the first two requests for a URL
    // get CleverTap's plain-text "URL not generated", which is retried.
    let sandbox = TestSandbox::start(SandboxConfig {
        url_not_generated: 2,
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let mut csv = String::from("identity\n");
    for i in 0..20_000 {
        csv.push_str(&format!("user-{i}\n"));
    }
    workspace.write("audience.csv", csv);
    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline("create", "admin@example.com", ""),
    );
    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 20_000);
    assert_eq!(summary["retries"], 2, "{summary}");
    let seen = sandbox.inspect();
    assert_eq!(seen.segments["VIP users"].identities, 20_000);
    let [upload] = seen.presigned_uploads.as_slice() else {
        panic!("one upload expected: {:?}", seen.presigned_uploads);
    };
    assert_eq!(upload.status, 200, "{upload:?}");
    let expected_bytes = "Type,Identity\n".len() as u64
        + (0..20_000)
            .map(|i| format!("i,user-{i}\n").len() as u64)
            .sum::<u64>();
    assert_eq!(upload.bytes_received, expected_bytes);
    assert_eq!(
        upload.headers.get("content-length").map(String::as_str),
        Some(expected_bytes.to_string().as_str())
    );
    for absent in [
        "transfer-encoding",
        "content-type",
        "x-clevertap-account-id",
        "x-clevertap-passcode",
    ] {
        assert!(
            !upload.headers.contains_key(absent),
            "`{absent}` was sent: {:?}",
            upload.headers
        );
    }
    // The spool file is gone.
    let spool = workspace.path(".tapline/spool");
    assert!(
        std::fs::read_dir(&spool).map_or(true, |mut entries| entries.next().is_none()),
        "the spool is left in {}",
        spool.display()
    );
}

#[test]
fn a_registration_retried_after_a_lost_answer_says_the_segment_may_exist() {
    // The first registration creates the segment, then answers after the client gave up
    // (1 s timeout); the retry meets the segment the first attempt made.
    let sandbox = TestSandbox::start(SandboxConfig {
        slow_registrations: 1,
        slow_response: std::time::Duration::from_secs(3),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("audience.csv", "identity\nu1\nu2\n");
    let connection = sandbox
        .connection_yaml()
        .replace("request_timeout_seconds: 5", "request_timeout_seconds: 1");
    workspace.write(
        "list.yaml",
        format!(
            "{connection}{}",
            pipeline("create", "admin@example.com", "")
        ),
    );
    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(1), "{summary}");
    let stop = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(
        stop.contains("duplicate_name")
            && stop.contains("may have created the segment already")
            && stop.contains("check the dashboard"),
        "{summary}"
    );
    // The segment is there, made by the first attempt.
    assert_eq!(sandbox.inspect().segments["VIP users"].identities, 2);
}

#[test]
fn the_error_budget_stops_a_custom_list_before_anything_is_sent() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "audience.csv",
        "identity,type\nu1,i\nu2,x\nu3,y\nu4,z\nu5,i\n",
    );
    workspace.pipeline(
        "list",
        &sandbox,
        &pipeline(
            "create",
            "admin@example.com",
            "skip_invalid_records: true\nmax_invalid_records: 2\n",
        ),
    );
    let (code, summary) = run(&workspace);
    assert_eq!(code, Some(1), "{summary}");
    let stop = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(stop.contains("max_invalid_records (2)"), "{summary}");
    assert_eq!(summary["requests"], 0, "{summary}");
    assert!(sandbox.inspect().segments.is_empty());
    assert_counts_add_up(&summary);
    assert_eq!(summary["records"]["skipped"], 3, "{summary}");
}
