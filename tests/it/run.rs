//! `tapline run` end to end: the real binary against the sandbox over loopback.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tapline::sandbox::{Fault, SandboxConfig};

#[test]
fn ten_thousand_profiles_arrive_in_full_within_the_thread_count() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(20),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(10_000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 4\n",
    );

    let output = tapline(workspace.dir.path(), &["run", "profiles.yaml", "--json"]);
    let summary = summary(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{summary}\n{}",
        stderr(&output)
    );
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(
        summary["records"],
        json!({"read": 10_000, "accepted": 10_000, "skipped": 0, "rejected": 0, "failed": 0})
    );
    assert_eq!(summary["requests"], 10);
    assert_eq!(summary["rejects_file"], serde_json::Value::Null);

    let seen = sandbox.inspect();
    assert_eq!(
        (seen.profiles, seen.distinct_profiles, seen.requests),
        (10_000, 10_000, 10)
    );
    assert_eq!(seen.largest_request, 1000);
    assert!(
        seen.max_in_flight <= 4,
        "{} in flight with thread_count 4",
        seen.max_in_flight
    );
    assert!(
        seen.max_in_flight >= 2,
        "requests were not concurrent: {}",
        seen.max_in_flight
    );
    let stored = sandbox.sandbox.profile("user-42").expect("profile stored");
    assert_eq!(stored["Email"], "user42@example.com");
    assert_eq!(stored["Age"], 18 + 42);
}

#[test]
fn ten_thousand_events_arrive_in_full_with_charged_items() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(10),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let mut jsonl = String::new();
    for i in 0..10_000 {
        jsonl.push_str(&format!(
            "{{\"identity\":\"user-{}\",\"evtName\":\"Charged\",\"ts\":\"2026-11-01 10:00:{:02}\",\"Amount\":{i},\"Items[0].Name\":\"item-{i}\",\"Items[1].Name\":\"extra\"}}\n",
            i % 500,
            i % 60
        ));
    }
    workspace.write("events.jsonl.gz", gzip(jsonl.as_bytes()));
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.jsonl.gz}\ntarget: {entity: user_events}\nthread_count: 10\n",
    );

    let (code, summary) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 10_000);
    let seen = sandbox.inspect();
    assert_eq!(seen.events, 10_000);
    assert!(
        seen.max_in_flight <= 10 && seen.largest_request <= 1000,
        "{} in flight, {} records in the largest request",
        seen.max_in_flight,
        seen.largest_request
    );
    let events = sandbox.sandbox.records("event");
    let amounts: std::collections::HashSet<i64> = events
        .iter()
        .filter_map(|e| e["evtData"]["Amount"].as_i64())
        .collect();
    assert_eq!(amounts.len(), 10_000, "every event arrived exactly once");
    // Requests arrive in any order: the eighth event is found by its amount, not its place.
    let eighth = events
        .iter()
        .find(|e| e["evtData"]["Amount"] == 7)
        .expect("the eighth event arrived");
    assert_eq!(
        eighth["evtData"]["Items"],
        json!([{"Name": "item-7"}, {"Name": "extra"}])
    );
    assert_eq!(eighth["ts"], 1_793_527_207, "2026-11-01 10:00:07 UTC");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

#[test]
fn every_record_arrives_through_twenty_percent_faults() {
    let sandbox = TestSandbox::start(SandboxConfig {
        fault_rate: 0.2,
        faults: vec![
            Fault::TooMany,
            Fault::ServerError,
            Fault::Unavailable,
            Fault::Drop,
        ],
        // A fixed seed: the same faults every run, so the test cannot pass by luck.
        seed: Some(20),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(10_000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 5\n",
    );

    let output = tapline(workspace.dir.path(), &["run", "profiles.yaml", "--json"]);
    let summary = summary(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{summary}\n{}",
        stderr(&output)
    );
    assert_counts_add_up(&summary);
    assert_eq!(summary["records"]["accepted"], 10_000);
    let seen = sandbox.inspect();
    assert_eq!(seen.distinct_profiles, 10_000, "every profile arrived");
    assert!(
        seen.faults >= 2,
        "too few faults were injected: {}",
        seen.faults
    );
    assert_eq!(
        summary["retries"].as_u64(),
        Some(seen.faults),
        "every fault cost one retry"
    );
    assert_eq!(summary["requests"].as_u64(), Some(seen.requests));
}

#[test]
fn invalid_rows_are_skipped_and_reported_when_allowed() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "people.csv",
        // (A quote that is not closed fails the run instead: tests/it/reliability.rs.)
        "identity,Email,Gender\nu1,a@example.com,F\nu2,not-an-email,M\n,c@example.com,F\nu4,d@example.com,M,extra\n",
    );
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );

    let (code, summary) = run_json(&workspace, &["people.yaml"]);
    assert_eq!(code, Some(0), "skipped records are allowed: {summary}");
    assert_eq!(
        summary["records"],
        json!({"read": 4, "accepted": 1, "skipped": 3, "rejected": 0, "failed": 0})
    );
    let rejects = rejects(workspace.dir.path(), &summary);
    let lines: Vec<_> = rejects
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or(0),
                r["code"].as_str().unwrap_or("").to_string(),
                r["outcome"].clone(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (3, "515".to_string(), json!("skipped")),
            (4, "523".to_string(), json!("skipped")),
            (5, "malformed_row".to_string(), json!("skipped"))
        ]
    );
    assert_eq!(
        rejects[0]["row"],
        json!({"identity": "u2", "Email": "not-an-email", "Gender": "M"})
    );
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not-an-email")
    );
    assert_eq!(sandbox.inspect().profiles, 1);
}

#[test]
fn the_first_invalid_row_stops_the_run_by_default() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "people.csv",
        "identity,Phone\nu1,+14155550101\nu2,+14155550102\nu3,555\nu4,+14155550104\n",
    );
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\n",
    );

    let (code, summary) = run_json(&workspace, &["people.yaml"]);
    assert_eq!(code, Some(1), "{summary}");
    assert_eq!(summary["status"], "failed");
    assert_eq!(
        summary["records"],
        json!({"read": 3, "accepted": 2, "skipped": 0, "rejected": 0, "failed": 1})
    );
    let reason = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("line 4") && reason.contains("skip_invalid_records"),
        "{reason}"
    );
    let rejects = rejects(workspace.dir.path(), &summary);
    assert_eq!(rejects.len(), 1);
    assert_eq!(
        (rejects[0]["line"].as_u64(), rejects[0]["code"].as_str()),
        (Some(4), Some("516"))
    );
    assert_eq!(
        sandbox.inspect().profiles,
        2,
        "rows before the invalid one were delivered"
    );

    let text = tapline(workspace.dir.path(), &["run", "people.yaml"]);
    let printed = stdout(&text);
    assert!(
        printed.contains("people: failed") && printed.contains("stopped at line 4"),
        "{printed}"
    );
}

#[test]
fn records_clevertap_refuses_map_back_to_their_lines() {
    let sandbox = TestSandbox::start(SandboxConfig {
        discarded_events: vec!["Old Promo".into()],
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let mut csv = String::from("identity,evtName,ts\n");
    for i in 0..1500 {
        let name = if i == 10 || i == 1200 {
            "Old Promo"
        } else {
            "Viewed"
        };
        csv.push_str(&format!("u{i},{name},1764300000\n"));
    }
    workspace.write("events.csv", csv);
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\nskip_invalid_records: true\n",
    );

    let (code, summary) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(code, Some(1), "rejected records fail the run: {summary}");
    assert_eq!(
        summary["records"],
        json!({"read": 1500, "accepted": 1498, "skipped": 0, "rejected": 2, "failed": 0})
    );
    let mut rejects = rejects(workspace.dir.path(), &summary);
    // Batches settle in the order their answers come back.
    rejects.sort_by_key(|reject| reject["line"].as_u64());
    let lines: Vec<_> = rejects
        .iter()
        .map(|r| {
            (
                r["line"].as_u64(),
                r["code"].as_str(),
                r["outcome"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (Some(12), Some("528"), Some("rejected")),
            (Some(1202), Some("528"), Some("rejected"))
        ]
    );
    assert_eq!(rejects[1]["record"]["identity"], "u1200");

    // Without skipping, the first rejection stops the run.
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\nthread_count: 1\n",
    );
    // The same file again, under new settings: `--force` sends it although it was delivered.
    let output = tapline(
        workspace.dir.path(),
        &["run", "events.yaml", "--json", "--force"],
    );
    let stopped = common::summary(&output);
    assert_eq!(output.status.code(), Some(1));
    assert_counts_add_up(&stopped);
    let summary = stopped;
    assert!(
        summary["stop_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("line 12"),
        "{summary}"
    );
    assert_eq!(summary["records"]["rejected"], 1);
}

#[test]
fn a_wrong_passcode_stops_at_once_and_never_shows_the_passcode() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(20_000));
    let secret = "wrong-secret-7f3a9";
    let (account, _) = sandbox.sandbox.credentials();
    workspace.write(
        "connections.yaml",
        format!(
            "main:\n  account_id: {account}\n  passcode: ${{TEST_PASSCODE}}\n  endpoint: {}\n",
            sandbox.sandbox.base_url()
        ),
    );
    workspace.write("profiles.yaml", "connection: main\nsource: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 3\n");

    for json in [true, false] {
        let args: &[&str] = if json {
            &["run", "profiles.yaml", "--json"]
        } else {
            &["run", "profiles.yaml"]
        };
        let output = tapline_with_env(workspace.dir.path(), args, &[("TEST_PASSCODE", secret)]);
        assert_eq!(output.status.code(), Some(1));
        let all = format!("{}{}", stdout(&output), stderr(&output));
        assert!(!all.contains(secret), "the passcode leaked:\n{all}");
        assert!(
            all.contains("refused the credentials of connection `main`"),
            "{all}"
        );
        if json {
            let summary = summary(&output);
            assert_counts_add_up(&summary);
            assert_eq!(summary["records"]["accepted"], 0);
            // The kind of stop, for a program; the same word in the history.
            assert_eq!(summary["stop_kind"], "unauthorized", "{summary}");
            let history = tapline(
                workspace.dir.path(),
                &["history", "--dir", ".", "--json", "--limit", "1"],
            );
            let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
            assert_eq!(runs[0]["stop_kind"], "unauthorized", "{runs}");
            let rejects = std::fs::read_to_string(
                workspace
                    .dir
                    .path()
                    .join(summary["rejects_file"].as_str().unwrap_or_default()),
            )
            .unwrap_or_default();
            assert!(!rejects.contains(secret));
        }
    }
    let seen = sandbox.inspect();
    assert!(
        seen.unauthorized <= 2 * 3,
        "a retry storm: {} refused requests",
        seen.unauthorized
    );
}

#[test]
fn dry_run_builds_every_request_and_sends_none() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(2_500));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\n",
    );
    let output = tapline(
        workspace.dir.path(),
        &["run", "profiles.yaml", "--dry-run", "--json"],
    );
    let summary = summary(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(summary["dry_run"]["requests"], 3);
    assert_eq!(summary["dry_run"]["records"], 2_500);
    assert_eq!(summary["dry_run"]["sample"]["identity"], "user-0");
    assert_eq!(summary["requests"], 0);
    assert_eq!(sandbox.inspect().requests, 0, "a dry run sent a request");
}

#[test]
fn ctrl_c_lets_requests_in_flight_finish_and_reports_honestly() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(50_000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 2\n",
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(["run", "profiles.yaml", "--json"])
        .current_dir(workspace.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    // Wait until some requests have been answered (the run lasts at least 7.5 s: 25 rounds
    // of 300 ms), then interrupt.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sandbox.inspect().profiles < 2_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "no request answered in 60 s"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("ends");
    let summary = summary(&output);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert_counts_add_up(&summary);
    assert!(
        summary["stop_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("interrupted"),
        "{summary}"
    );
    let accepted = summary["records"]["accepted"].as_u64().unwrap_or_default();
    assert!((2_000..50_000).contains(&accepted), "{summary}");
    assert_eq!(
        accepted,
        sandbox.inspect().profiles,
        "the summary matches what arrived"
    );
}

#[test]
fn the_example_pipelines_run_on_the_built_in_sandbox() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = tapline(
        root,
        &["run", "pipelines/purchases.yaml", "--sandbox", "--json"],
    );
    let summary = summary(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{summary}\n{}",
        stderr(&output)
    );
    assert_eq!(summary["records"]["accepted"], summary["records"]["read"]);
    assert_eq!(summary["sandbox"]["events"], summary["records"]["accepted"]);
}

#[test]
fn throttling_429s_are_retried_until_everything_arrives() {
    // Requests last long enough that more than two are in flight even when a (debug) build
    // takes a while to map each batch.
    let sandbox = TestSandbox::start(SandboxConfig {
        max_concurrent: 2,
        latency: Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(8_000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 6\n",
    );
    let (code, summary) = run_json(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    let seen = sandbox.inspect();
    assert!(seen.throttled > 0, "the sandbox never throttled");
    assert_eq!(summary["retries"].as_u64(), Some(seen.throttled));
    assert_eq!(seen.distinct_profiles, 8_000);
}

#[test]
fn odd_source_files_end_clearly() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // A header-only file: nothing to send, and the run says so.
    workspace.write("header.csv", "identity,Name\n");
    workspace.pipeline(
        "header",
        &sandbox,
        "source: {path: header.csv}\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run_json(&workspace, &["header.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["read"], 0);
    assert_eq!(summary["warnings"], json!(["the source has no records"]));

    // An empty file is a configuration error: nothing runs.
    workspace.write("empty.csv", "");
    workspace.pipeline(
        "empty",
        &sandbox,
        "source: {path: empty.csv}\ntarget: {entity: user_profiles}\n",
    );
    let output = tapline(workspace.dir.path(), &["run", "empty.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is empty: it has no header row"),
        "{}",
        stderr(&output)
    );

    // Invalid UTF-8 and bad JSON lines are invalid records with their line numbers.
    workspace.write("events.jsonl", b"{\"identity\":\"u1\",\"evtName\":\"A\"}\n{\"identity\":\"\xff\",\"evtName\":\"A\"}\n{oops\n{\"identity\":\"u4\",\"evtName\":\"A\"}\n");
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.jsonl}\ntarget: {entity: user_events}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        summary["records"],
        json!({"read": 4, "accepted": 2, "skipped": 2, "rejected": 0, "failed": 0})
    );
    let rejects = rejects(workspace.dir.path(), &summary);
    assert_eq!(
        (rejects[0]["line"].as_u64(), rejects[0]["code"].as_str()),
        (Some(2), Some("malformed_row"))
    );
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("UTF-8")
    );
    assert_eq!(
        (
            rejects[1]["line"].as_u64(),
            rejects[1]["reason"]
                .as_str()
                .map(|r| r.contains("invalid JSON"))
        ),
        (Some(3), Some(true))
    );
}

#[test]
fn a_slow_answer_after_the_records_were_stored_makes_the_only_duplicates() {
    // A slow fault stores the batch, then answers after 3 s; the client gives up at 1 s and
    // sends the batch again: each such fault is one batch that arrives twice, and nothing else.
    let sandbox = TestSandbox::start(SandboxConfig {
        fault_rate: 0.2,
        faults: vec![Fault::Slow],
        slow_response: Duration::from_secs(3),
        seed: Some(7),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(10_000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 5\n",
    );
    let pipeline = std::fs::read_to_string(workspace.path("profiles.yaml"))
        .unwrap()
        .replace("request_timeout_seconds: 5", "request_timeout_seconds: 1");
    workspace.write("profiles.yaml", pipeline);
    let (code, summary) = run_json(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    let seen = sandbox.inspect();
    assert!(seen.faults > 0, "no slow answer was injected");
    assert_eq!(seen.distinct_profiles, 10_000, "every profile arrived");
    assert_eq!(
        seen.profiles - seen.distinct_profiles as u64,
        seen.faults * 1000,
        "each slow answer is one batch stored twice"
    );
    assert_eq!(summary["retries"].as_u64(), Some(seen.faults));
}

#[test]
fn an_account_with_more_event_properties_says_so_in_its_connection() {
    let sandbox = TestSandbox::start(SandboxConfig {
        event_properties: 256,
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let header: Vec<String> = (0..150).map(|index| format!("p{index}")).collect();
    let values: Vec<&str> = (0..150).map(|_| "x").collect();
    workspace.write(
        "wide.csv",
        format!(
            "identity,evtName,{}\nu1,Viewed,{}\n",
            header.join(","),
            values.join(",")
        ),
    );
    let body =
        "source: {path: wide.csv}\ntarget: {entity: user_events}\nskip_invalid_records: true\n";
    // CleverTap's default is 100: refused before sending.
    workspace.pipeline("wide", &sandbox, body);
    let output = tapline(workspace.dir.path(), &["run", "wide.yaml", "--json"]);
    let refused = common::summary(&output);
    assert_eq!(refused["records"]["skipped"], 1, "{refused}");
    // With the account's limit in the connection, it goes.
    let with_limit = std::fs::read_to_string(workspace.path("wide.yaml"))
        .unwrap()
        .replace(
            "connection:\n",
            "connection:\n  limits: {event_properties: 256}\n",
        );
    workspace.write("wide.yaml", with_limit.clone());
    let output = tapline(
        workspace.dir.path(),
        &["run", "wide.yaml", "--json", "--force"],
    );
    let sent = common::summary(&output);
    assert_eq!(output.status.code(), Some(0), "{sent}");
    assert_eq!(sent["records"]["accepted"], 1, "{sent}");
    assert_eq!(sandbox.inspect().events, 1);
    // Out of range is a validate error at the field.
    workspace.write(
        "wide.yaml",
        with_limit.replace("event_properties: 256", "event_properties: 5000"),
    );
    let output = tapline(workspace.dir.path(), &["validate", "wide.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("wide.yaml:2:"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_summary_lists_the_top_reasons_with_counts_and_an_example_line() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "people.csv",
        "identity,Email\nu1,a@b.co\nu2,nope\nu3,bad\n,x@y.z\n",
    );
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run_json(&workspace, &["people.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        summary["reasons"],
        json!([
            {"code": "515", "records": 2, "example_line": 3, "example": "Email \"nope\" is not a valid email address"},
            {"code": "523", "records": 1, "example_line": 5, "example": "the row has no `identity`, `objectId`, `FBID` or `GPID` value"}
        ])
    );
    let output = tapline(workspace.dir.path(), &["run", "people.yaml", "--force"]);
    let printed = stdout(&output);
    assert!(
        printed.contains(
            "  reasons   515 — 2 records, e.g. line 3: Email \"nope\" is not a valid email address\n            523 — 1 record, e.g. line 5: "
        ),
        "{printed}"
    );
}

#[test]
fn a_run_stops_when_a_batch_runs_out_of_retries() {
    // CleverTap is down and says to retry at once: the first batch spends its ten attempts
    // in moments, and the run stops instead of trying every other batch ten times too.
    let sandbox = TestSandbox::start(SandboxConfig {
        fault_rate: 1.0,
        faults: vec![tapline::sandbox::Fault::Outage],
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(5000));
    workspace.pipeline(
        "down",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\n",
    );
    let (code, summary) = run_json(&workspace, &["down.yaml"]);
    assert_eq!(code, Some(1), "{summary}");
    assert_counts_add_up(&summary);
    assert_eq!(summary["status"], "failed");
    assert_eq!(
        summary["requests"], 10,
        "one batch, ten attempts: {summary}"
    );
    // What was read is failed (the first batch, and what the reader had ready); the rest
    // of the file was never read, and the next run starts from its first line.
    let read = summary["records"]["read"].as_u64().unwrap_or_default();
    assert!((1000..5000).contains(&read), "{summary}");
    assert_eq!(summary["records"]["failed"], read, "{summary}");
    assert_eq!(
        summary["stop_reason"],
        "stopped: a batch was not delivered after 10 attempts (the last: HTTP 503: Service unavailable); what was delivered is checkpointed, and the next run sends the rest"
    );
    let output = tapline(workspace.dir.path(), &["run", "down.yaml"]);
    assert!(
        stdout(&output).contains("\n  stopped: a batch was not delivered after 10 attempts"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn the_progress_line_shows_bytes_and_an_eta_on_a_terminal_only() {
    // Eight requests of 300 ms one after another: the run outlasts a few redraws, and the
    // second in which no estimate is made.
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(8000));
    workspace.pipeline(
        "slow",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\nrerun: always\n",
    );
    let drawn = on_a_terminal(workspace.dir.path(), "run slow.yaml");
    assert!(
        drawn.contains("slow [") && drawn.contains(" · ETA "),
        "{drawn}"
    );
    // The first frames show no estimate: nothing had settled to estimate from.
    let first_bar = &drawn[drawn.find("slow [").unwrap()..];
    let first_frame = &first_bar[..first_bar[1..]
        .find("slow")
        .map_or(first_bar.len(), |end| end + 1)];
    assert!(!first_frame.contains("ETA"), "{first_frame}");
    // `unchanged` is counted only by a `send: changes` pipeline.
    assert!(!drawn.contains("unchanged"), "{drawn}");
    let size = std::fs::metadata(workspace.path("profiles.csv"))
        .unwrap()
        .len();
    assert!(size > 100 * 1024, "a file measured in KiB: {size}");
    assert!(drawn.contains(" KiB/"), "{drawn}");

    // A fixed thread count shows no limit; `thread_count: auto` shows the one it is at.
    assert!(!drawn.contains("in flight"), "{drawn}");
    workspace.pipeline(
        "adaptive",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: auto\nrerun: always\n",
    );
    let drawn = on_a_terminal(workspace.dir.path(), "run adaptive.yaml");
    let limit = drawn
        .split(" · auto: ")
        .nth(1)
        .and_then(|rest| rest.split(" in flight").next())
        .and_then(|limit| limit.parse::<u32>().ok());
    assert!(
        limit.is_some_and(|limit| (1..=15).contains(&limit)),
        "{drawn}"
    );

    // Off a terminal: only the summary.
    let output = tapline(workspace.dir.path(), &["run", "slow.yaml"]);
    assert!(!stderr(&output).contains("ETA"), "{}", stderr(&output));
    assert!(!stdout(&output).contains("ETA"));
}

#[test]
fn a_zstd_source_uploads_like_a_plain_one() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let csv = profile_csv(2500);
    workspace.write(
        "profiles.csv.zst",
        zstd::encode_all(csv.as_bytes(), 3).expect("compress"),
    );
    workspace.pipeline(
        "zst",
        &sandbox,
        "source: {path: profiles.csv.zst}\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run_json(&workspace, &["zst.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 2500);
    assert_eq!(sandbox.inspect().distinct_profiles, 2500);
}
