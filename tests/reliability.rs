//! The ways an unfriendly world loses records, each kept as a scenario against the real
//! binary and the sandbox so that it cannot come back: broken files, pipelines changed
//! between runs, files changed during a run, interrupted daemons.

mod common;

use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

fn run(workspace: &Workspace, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["run", "--json"];
    all.extend_from_slice(args);
    let output = tapline(workspace.dir.path(), &all);
    (output.status.code(), summary(&output))
}

#[test]
fn a_quote_that_swallows_the_rest_of_the_file_fails_the_run_even_when_skipping() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let mut csv = String::from("identity,Name\nu1,One\nu2,\"P,2\n");
    for i in 0..50_000 {
        csv.push_str(&format!("user-{i},Name {i}\n"));
    }
    workspace.write("profiles.csv", csv);
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(1), "{summary}");
    let stop = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(
        stop.contains("line 3: ") && stop.contains("a quote opened in this row"),
        "{summary}"
    );
    assert_counts_add_up(&summary);
    assert_eq!(summary["records"]["accepted"], 1, "{summary}");

    // The file was not delivered in full: a second run does not call it up to date.
    let (code, again) = run(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(1), "{again}");
    assert!(again["up_to_date"].is_null(), "{again}");
}

#[test]
fn a_source_written_to_during_the_run_is_not_marked_delivered() {
    // Five requests of 500 ms one after another: the run is still reading when the test
    // sees the first request arrive.
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: std::time::Duration::from_millis(500),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(5000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\n",
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(["run", "profiles.yaml", "--json"])
        .current_dir(workspace.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    wait_until(60, "the first request", || sandbox.inspect().requests > 0);
    // An exporter appends to the file in place while tapline reads it.
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(workspace.path("profiles.csv"))
        .unwrap();
    writeln!(file, "late-user,Late,late@example.com,+14155550000,F,30,1").unwrap();
    drop(file);
    let output = child.wait_with_output().expect("ends");
    let summary = summary(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert!(
        summary["warnings"]
            .to_string()
            .contains("changed while it was being read"),
        "{summary}"
    );
    // Not delivered: the next run sends the file again, new row included.
    let (code, again) = run(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0), "{again}");
    assert!(again["up_to_date"].is_null(), "{again}");
    assert_eq!(again["records"]["read"], 5001, "{again}");
    assert!(sandbox.sandbox.profile("late-user").is_some());
}

#[test]
fn a_checkpoint_or_delivery_under_other_settings_does_not_count() {
    const ROWS: usize = 10_000;
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: std::time::Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let mut csv = String::from("identity,evtName,Plan\n");
    for i in 0..ROWS {
        csv.push_str(&format!("user-{i},Viewed,gold\n"));
    }
    workspace.write("rows.csv", csv);
    let pipeline = |entity: &str| {
        workspace.pipeline(
            "rows",
            &sandbox,
            &format!("source: {{path: rows.csv}}\ntarget: {{entity: {entity}}}\nthread_count: 1\n"),
        )
    };
    // An events run killed halfway leaves a checkpoint.
    pipeline("user_events");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(["run", "rows.yaml", "--json"])
        .current_dir(workspace.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    wait_until(60, "three requests answered", || {
        sandbox.inspect().events >= 3000
    });
    child.kill().expect("kill -9");
    child.wait().expect("reaped");

    // The pipeline now sends profiles: nothing of the checkpoint applies.
    pipeline("user_profiles");
    let (code, summary) = run(&workspace, &["rows.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["rows_resumed"], 0, "{summary}");
    assert_eq!(summary["records"]["accepted"], ROWS, "{summary}");
    assert!(
        summary["warnings"]
            .to_string()
            .contains("under other settings"),
        "{summary}"
    );
    assert_eq!(sandbox.inspect().distinct_profiles, ROWS);

    // Delivered as profiles; sent as events it is not up to date, and every event goes.
    let (_, again) = run(&workspace, &["rows.yaml"]);
    assert!(again["up_to_date"].is_string(), "{again}");
    pipeline("user_events");
    let events_before = sandbox.inspect().events;
    let (code, as_events) = run(&workspace, &["rows.yaml"]);
    assert_eq!(code, Some(0), "{as_events}");
    assert!(as_events["up_to_date"].is_null(), "{as_events}");
    assert_eq!(sandbox.inspect().events - events_before, ROWS as u64);
}

#[test]
fn secrets_written_into_urls_appear_in_no_output_and_no_state_file() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    let (account, _) = sandbox.sandbox.credentials();
    let endpoint = sandbox
        .sandbox
        .base_url()
        .replace("http://", "http://proxyuser:PROXY-PASSWORD@");
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    workspace.write(
        "events.yaml",
        format!(
            "connection:\n  account_id: {account}\n  passcode_file: passcode.txt\n  endpoint: {endpoint}\nsource: {{path: events.csv}}\ntarget: {{entity: user_events}}\nnotifications:\n  - on: always\n    webhook: {{ url: \"http://hookuser:HOOK-PASSWORD@127.0.0.1:{dead_port}/hook?token=HOOK-TOKEN\" }}\n"
        ),
    );
    let run = tapline(workspace.dir.path(), &["run", "events.yaml", "--json"]);
    let summary = summary(&run);
    assert_eq!(run.status.code(), Some(0), "{summary}");
    assert!(
        summary["warnings"]
            .to_string()
            .contains("notification not delivered"),
        "{summary}"
    );
    let history = tapline(workspace.dir.path(), &["history", "--dir", ".", "--json"]);
    let plain = tapline(workspace.dir.path(), &["run", "events.yaml"]);
    let mut everything = String::new();
    for output in [&run, &history, &plain] {
        everything.push_str(&stdout(output));
        everything.push_str(&stderr(output));
    }
    for entry in walk(&workspace.path(".tapline")) {
        everything.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap()));
    }
    for secret in [
        "PROXY-PASSWORD",
        "HOOK-PASSWORD",
        "HOOK-TOKEN",
        "proxyuser",
        "hookuser",
    ] {
        assert!(
            !everything.contains(secret),
            "`{secret}` leaked:\n{everything}"
        );
    }
    assert!(everything.contains("token=***"), "{everything}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn control_characters_and_mismatched_replays_are_invalid_records() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "events.csv",
        "identity,evtName\nu1,Viewed\nu\u{0}2,Viewed\nu3,View\u{1b}[31med\nu4,Viewed\n",
    );
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run(&workspace, &["events.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
    assert_eq!(summary["records"]["skipped"], 2, "{summary}");
    let reasons: Vec<String> = rejects(workspace.dir.path(), &summary)
        .iter()
        .map(|entry| entry["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        reasons[0].contains("control character \\u{0}"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("control character \\u{1b}"),
        "{reasons:?}"
    );

    // A profile record replayed through an events pipeline, and a negative line, are
    // refused like invalid rows.
    workspace.write(
        "edited.jsonl",
        concat!(
            r#"{"line":2,"outcome":"rejected","code":"x","reason":"x","record":{"type":"profile","identity":"u9","profileData":{"Name":"N"}}}"#,
            "\n",
            r#"{"line":-5,"outcome":"rejected","code":"x","reason":"x","record":{"type":"event","identity":"u8","evtName":"Viewed","evtData":{}}}"#,
            "\n",
            r#"{"line":4,"outcome":"rejected","code":"x","reason":"x","record":{"type":"event","identity":"u7","evtName":"Viewed","evtData":{}}}"#,
            "\n",
        ),
    );
    let events_before = sandbox.inspect().events;
    let output = tapline(
        workspace.dir.path(),
        &[
            "replay",
            "edited.jsonl",
            "--pipeline",
            "events.yaml",
            "--json",
        ],
    );
    let replayed = common::summary(&output);
    assert_eq!(replayed["records"]["accepted"], 1, "{replayed}");
    assert_eq!(replayed["records"]["skipped"], 2, "{replayed}");
    assert_eq!(sandbox.inspect().events, events_before + 1);
    assert!(sandbox.sandbox.profile("u9").is_none());
    let reasons = rejects(workspace.dir.path(), &replayed)
        .iter()
        .map(|entry| entry["reason"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        reasons.contains("of type `profile`, but this pipeline sends events"),
        "{reasons}"
    );
    assert!(reasons.contains("`line: -5`"), "{reasons}");
}
