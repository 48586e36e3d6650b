//! Every run sends exactly what the source says, to the account it names: each test is one
//! way an adversarial run found the engine sending the wrong rows, to the wrong account, or
//! settling records without an account of them (issue 23), kept so it cannot come back.
//!
//! The query-source and shared-store tests need PostgreSQL (see `postgres.rs`); the one with
//! a skewed clock needs `faketime` (Debian's package; `.ci/run` installs it).

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

fn run(workspace: &Workspace, pipeline: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec![pipeline];
    args.extend_from_slice(extra);
    run_json(workspace, &args)
}

/// Writes a private passcode file (tapline warns about one others can read).
fn passcode(workspace: &Workspace, name: &str, passcode: &str) {
    let path = workspace.write(name, passcode);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn warnings(summary: &Value) -> String {
    summary["warnings"].to_string()
}

// 1. An edited query is never resumed from the snapshot of the old one.
#[test]
fn an_edited_query_starts_over_instead_of_resuming_the_old_snapshot() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.users (n int, identity text, email text, opted_out bool);
         INSERT INTO $schema.users VALUES
           (1, 'u1', 'u1@example.com', false), (2, 'u2', 'u2@example.com', false),
           (3, 'u3', 'not an email', false), (4, 'u4', 'u4@example.com', false),
           (5, 'u5', 'u5@example.com', true), (6, 'u6', 'u6@example.com', false);",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let pipeline = |query: &str| {
        database.pipeline(
            &workspace,
            &sandbox,
            query,
            "target: {entity: user_profiles}\n",
        );
    };
    pipeline(r#"SELECT identity, email AS "Email" FROM $schema.users ORDER BY n"#);
    // The invalid row stops the run: its checkpoint and snapshot stay for a resume.
    let (code, summary) = run(&workspace, "pipeline.yaml", &[]);
    assert_ne!(code, Some(0), "{summary}");
    assert!(
        summary["stop_reason"].to_string().contains("line 3"),
        "{summary}"
    );

    // The query is fixed and now leaves out the opted-out user.
    pipeline(
        r#"SELECT identity, email AS "Email" FROM $schema.users
WHERE NOT opted_out AND email LIKE '%@%' ORDER BY n"#,
    );
    let (code, summary) = run(&workspace, "pipeline.yaml", &[]);
    assert_eq!(code, Some(0), "not stuck on the old snapshot: {summary}");
    assert_eq!(summary["rows_resumed"], 0, "{summary}");
    assert!(
        warnings(&summary).contains("the query and its database"),
        "says why it starts over: {summary}"
    );
    let profiles = profiles_by_identity(&sandbox);
    assert!(!profiles.contains_key("u5"), "the opted-out user was sent");
    assert!(!profiles.contains_key("u3"));
    assert_eq!(
        profiles.keys().collect::<Vec<_>>(),
        ["u1", "u2", "u4", "u6"]
    );
}

// 2. Two pipelines of one name, one state folder, two accounts: each resumes its own rows.
#[test]
fn pipelines_of_one_name_in_two_folders_never_send_each_others_rows() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.a_users AS SELECT 'a' || i AS identity FROM generate_series(1, 3) i;
         CREATE TABLE $schema.b_users AS SELECT 'b' || i AS identity FROM generate_series(1, 3) i;",
    );
    let account = |id: &str| {
        TestSandbox::start(SandboxConfig {
            account_id: id.into(),
            ..SandboxConfig::default()
        })
    };
    let (a, b) = (account("ACC-A"), account("ACC-B"));
    let workspace = Workspace::new();
    for (folder, sandbox, table) in [("a", &a, "a_users"), ("b", &b, "b_users")] {
        let (account_id, _) = sandbox.sandbox.credentials();
        // A passcode the account refuses: the run reads its query, then stops.
        passcode(&workspace, &format!("{folder}/passcode.txt"), "wrong");
        workspace.write(
            &format!("{folder}/vip.yaml"),
            format!(
                "connection:\n  account_id: {account_id}\n  passcode_file: passcode.txt\n  endpoint: {}\nsource:\n  database: {{postgres: \"{}\"}}\n  query: SELECT identity FROM {}.{table} ORDER BY identity\ntarget: {{entity: user_profiles}}\n",
                sandbox.sandbox.base_url(),
                database.url,
                database.schema
            ),
        );
    }
    let state = workspace.path("state");
    let state = state.to_str().unwrap();
    for folder in ["a", "b"] {
        let (code, summary) = run(
            &workspace,
            &format!("{folder}/vip.yaml"),
            &["--state-dir", state],
        );
        assert_ne!(code, Some(0), "{summary}");
    }
    for folder in ["a", "b"] {
        passcode(
            &workspace,
            &format!("{folder}/passcode.txt"),
            tapline::sandbox::DEFAULT_PASSCODE,
        );
    }
    let (code, summary) = run(&workspace, "a/vip.yaml", &["--state-dir", state]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        profiles_by_identity(&a).keys().collect::<Vec<_>>(),
        ["a1", "a2", "a3"],
        "account A received B's rows"
    );
    let (code, summary) = run(&workspace, "b/vip.yaml", &["--state-dir", state]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        profiles_by_identity(&b).keys().collect::<Vec<_>>(),
        ["b1", "b2", "b3"]
    );
}

// 3. "Delivered" is the last delivery of the pipeline to the destination.
#[test]
fn content_that_goes_back_to_an_earlier_one_is_sent_again() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.pipeline(
        "plan",
        &sandbox,
        "source: {path: plan.csv}\ntarget: {entity: user_profiles}\n",
    );
    let plan_of_u1 = || sandbox.sandbox.profile("u1").unwrap()["Plan"].clone();
    for plan in ["gold", "silver", "gold"] {
        workspace.write("plan.csv", format!("identity,Plan\nu1,{plan}\n"));
        let (code, summary) = run(&workspace, "plan.yaml", &[]);
        assert_eq!(code, Some(0), "{summary}");
        assert_eq!(summary["up_to_date"], Value::Null, "{plan}: {summary}");
        assert_eq!(plan_of_u1(), plan);
    }
    // The same content again is up to date.
    let (_, summary) = run(&workspace, "plan.yaml", &[]);
    assert!(summary["up_to_date"].is_string(), "{summary}");

    // A run that started sending other content, and stopped, leaves nothing delivered.
    workspace.write("plan.csv", "identity,Plan\nu1,silver\nu2,not-sent\n");
    passcode(&workspace, "passcode.txt", "wrong");
    let (code, _) = run(&workspace, "plan.yaml", &[]);
    assert_ne!(code, Some(0));
    passcode(
        &workspace,
        "passcode.txt",
        tapline::sandbox::DEFAULT_PASSCODE,
    );
    workspace.write("plan.csv", "identity,Plan\nu1,gold\n");
    let (code, summary) = run(&workspace, "plan.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 1, "{summary}");
}

// 4. An arriving file's records are the pipeline's: overlapping files send each event once,
// and `state forget` forgets them.
#[test]
fn arriving_files_share_their_pipelines_fingerprints() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let events = |range: std::ops::RangeInclusive<u32>| {
        range.fold(String::from("identity,evtName,ts\n"), |mut csv, n| {
            csv.push_str(&format!("u{n},Viewed,{}\n", 1_796_000_000 + n));
            csv
        })
    };
    workspace.write("drops/events_1.csv", events(1..=10));
    workspace.pipeline(
        "views",
        &sandbox,
        "source: {path: \"drops/events_*.csv\"}\ntarget: {entity: user_events}\nsend: changes\ntrigger: file_arrival\n",
    );
    let (code, summary) = run(&workspace, "views.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(sandbox.inspect().events, 10);

    workspace.write("drops/events_2.csv", events(6..=15));
    let output = tapline(workspace.dir.path(), &["run", "views.yaml", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(sandbox.inspect().events, 15, "the overlap went twice");

    let output = tapline(
        workspace.dir.path(),
        &["state", "forget", "views", "--dir", "."],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("views: forgot 15 record fingerprints"),
        "{}",
        stdout(&output)
    );
    workspace.write("drops/events_3.csv", events(1..=15));
    let output = tapline(workspace.dir.path(), &["run", "views.yaml", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(sandbox.inspect().events, 30, "forgotten means sent again");
}

// 5. A killed `--full` run is resumed as `--full`.
#[test]
fn a_killed_full_run_resumes_sending_every_record() {
    const ROWS: u64 = 20_000;
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(100),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(ROWS as usize));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 2\nsend: changes\n",
    );
    let (code, summary) = run(&workspace, "profiles.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(sandbox.inspect().profiles, ROWS);

    kill_run_when(
        &workspace,
        &["profiles.yaml", "--full"],
        "a quarter of the --full run",
        || sandbox.inspect().profiles >= ROWS + ROWS / 4,
    );
    assert!(sandbox.inspect().profiles < 2 * ROWS, "killed mid-way");

    let (code, summary) = run(&workspace, "profiles.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary["resumed_from"].is_string(), "{summary}");
    // Nothing left out as unchanged: every record not settled before is sent.
    assert_eq!(summary["records"]["unchanged"], Value::Null, "{summary}");
    assert_eq!(
        summary["records"]["accepted"].as_u64().unwrap()
            + summary["rows_resumed"].as_u64().unwrap(),
        ROWS,
        "{summary}"
    );
    assert!(warnings(&summary).contains("--full"), "{summary}");
    assert!(
        sandbox.inspect().profiles >= 2 * ROWS,
        "every profile re-sent: {}",
        sandbox.inspect().profiles
    );
}

// 6. One rule for identities: sent exactly as the source has them, by every operation.
#[test]
fn a_deletion_names_the_profile_the_upload_made() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "profiles.csv",
        "identity,Plan\n\" alice\",padded\nalice,plain\n",
    );
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run(&workspace, "profiles.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(sandbox.sandbox.profile(" alice").is_some());

    workspace.write("erase.csv", "identity\n\" alice\"\n");
    workspace.pipeline(
        "erase",
        &sandbox,
        "source: {path: erase.csv}\ntarget: {entity: user_profiles, operation: delete_profiles, confirm_destructive: true}\n",
    );
    let output = tapline(workspace.dir.path(), &["run", "erase.yaml", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("    identity \" alice\"\n"),
        "the dry run shows what is sent: {}",
        stdout(&output)
    );
    let (code, summary) = run(&workspace, "erase.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    let deleted = sandbox.inspect().deleted;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].value, " alice");
    assert!(deleted[0].found, "the uploaded profile was deleted");
    assert!(sandbox.sandbox.profile(" alice").is_none());
    assert_eq!(
        sandbox.sandbox.profile("alice").unwrap()["Plan"],
        "plain",
        "another profile was deleted"
    );
}

// 7. Nothing is settled before its rejects entry is written.
#[test]
fn records_are_not_settled_without_their_rejects_entry() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "profiles.csv",
        "identity,Email\nu1,u1@example.com\nu2,not an email\nu3,u3@example.com\n",
    );
    let body = "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n";
    // A name whose rejects file name would be longer than any file system allows.
    let long = "p".repeat(240);
    workspace.pipeline(&long, &sandbox, body);
    let (code, summary) = run(&workspace, &format!("{long}.yaml"), &[]);
    assert_eq!(code, Some(0), "{summary}");
    let rejects_file = summary["rejects_file"].as_str().expect("a rejects file");
    assert!(
        Path::new(rejects_file).file_name().unwrap().len() <= 255,
        "{rejects_file}"
    );
    assert_eq!(rejects(workspace.dir.path(), &summary).len(), 1);

    // A rejects folder that cannot be made (a file is in the way): the run fails, the
    // skipped row is not settled and the file is not marked delivered.
    workspace.pipeline("vip", &sandbox, body);
    workspace.write("blocked", "a file, not a folder");
    let (code, summary) = run(
        &workspace,
        "vip.yaml",
        &["--rejects-dir", "blocked/rejects"],
    );
    assert_ne!(code, Some(0), "{summary}");
    assert_eq!(summary["status"], "failed", "{summary}");
    assert!(
        summary["stop_reason"]
            .to_string()
            .contains("cannot write the rejects file"),
        "{summary}"
    );
    let (code, summary) = run(&workspace, "vip.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["up_to_date"], Value::Null, "{summary}");
    assert_eq!(summary["records"]["skipped"], 1, "{summary}");
    assert_eq!(rejects(workspace.dir.path(), &summary)[0]["line"], 3);
}

// 8. Answers that echo the record instead of numbering it are matched by the record.
#[test]
fn refusals_without_a_record_number_are_matched_by_the_echoed_record() {
    let sandbox = TestSandbox::start(SandboxConfig {
        refused_values: vec!["b@example.com".into()],
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write(
        "subscriptions.csv",
        "type,value,status\nemail,a@example.com,Unsubscribe\nemail,b@example.com,Unsubscribe\nemail,c@example.com,Unsubscribe\n",
    );
    workspace.pipeline(
        "subscriptions",
        &sandbox,
        "source: {path: subscriptions.csv}\ntarget: {entity: user_profiles, operation: update_subscription}\nskip_invalid_records: true\n",
    );
    let (_, summary) = run(&workspace, "subscriptions.yaml", &[]);
    assert_counts_add_up(&summary);
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
    assert_eq!(summary["records"]["rejected"], 1, "{summary}");
    let rejected = rejects(workspace.dir.path(), &summary);
    assert_eq!(rejected[0]["line"], 3, "{rejected:?}");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("refused by the account"),
        "{rejected:?}"
    );
}

// 9. JSON Lines profiles whose identity is a number are fingerprinted like any other.
#[test]
fn profiles_with_numeric_identities_are_left_out_when_unchanged() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let file = |changed: &str| {
        (1..=100).fold(String::new(), |mut jsonl, n| {
            let plan = if n == 7 { changed } else { "gold" };
            jsonl.push_str(&format!("{{\"identity\": {n}, \"Plan\": \"{plan}\"}}\n"));
            jsonl
        })
    };
    workspace.write("profiles.jsonl", file("gold"));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.jsonl}\ntarget: {entity: user_profiles}\nsend: changes\n",
    );
    let (code, summary) = run(&workspace, "profiles.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 100, "{summary}");
    workspace.write("profiles.jsonl", file("silver"));
    let (code, summary) = run(&workspace, "profiles.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 1, "{summary}");
    assert_eq!(summary["records"]["unchanged"], 99, "{summary}");
}

// 10. A backfill of old events in overlapping files sends the overlap once.
#[test]
fn old_events_are_deduplicated_for_their_days_after_sending() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // A year before now: long past `ts` + event_days.
    let year_ago = chrono::Utc::now().timestamp() - 365 * 86_400;
    let events = |range: std::ops::RangeInclusive<i64>| {
        range.fold(
            String::from("identity,evtName,ts,Amount\n"),
            |mut csv, n| {
                csv.push_str(&format!("u{n},Charged,{},{n}\n", year_ago + n * 60));
                csv
            },
        )
    };
    workspace.pipeline(
        "backfill",
        &sandbox,
        "source: {path: purchases.csv}\ntarget: {entity: user_events}\nsend: changes\nchanges: {event_days: 30}\n",
    );
    workspace.write("purchases.csv", events(1..=10));
    let (code, summary) = run(&workspace, "backfill.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    workspace.write("purchases.csv", events(6..=15));
    let (code, summary) = run(&workspace, "backfill.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["unchanged"], 5, "{summary}");
    assert_eq!(sandbox.inspect().events, 15, "Charged counted twice");
}

// 11. A process whose clock runs 100 days fast prunes nothing of today's history.
#[test]
fn a_process_with_a_fast_clock_prunes_nothing_that_is_not_old() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    if std::process::Command::new("faketime")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "faketime is required under CI (.ci/run installs it)"
        );
        eprintln!("skipped: no `faketime` (apt-get install faketime)");
        return;
    }
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let state = database.state_url();
    workspace.write("today.csv", "identity,Email\nu1,u1@example.com\nu2,bad\n");
    workspace.pipeline(
        "today",
        &sandbox,
        "source: {path: today.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let output = tapline(
        workspace.dir.path(),
        &["run", "today.yaml", "--json", "--state", &state],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let today = summary(&output);
    let run_id = today["run_id"].as_str().unwrap().to_string();
    let rejects_file = workspace.path(today["rejects_file"].as_str().unwrap());
    assert!(rejects_file.exists());

    workspace.write("other.csv", "identity\nu3\n");
    workspace.pipeline(
        "other",
        &sandbox,
        "source: {path: other.csv}\ntarget: {entity: user_profiles}\n",
    );
    let output = std::process::Command::new("faketime")
        .args(["-f", "+100d", env!("CARGO_BIN_EXE_tapline")])
        .args(["run", "other.yaml", "--json", "--state", &state])
        .current_dir(workspace.dir.path())
        .env_remove("TAPLINE_STATE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        summary(&output)["run_id"].as_str().unwrap().starts_with(
            &(chrono::Utc::now() + chrono::Duration::days(100))
                .format("%Y%m%d")
                .to_string()
        ),
        "the clock was skewed: {}",
        stdout(&output)
    );
    let output = tapline(
        workspace.dir.path(),
        &["history", "--run", &run_id, "--json", "--state", &state],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "today's run was pruned: {}",
        stderr(&output)
    );
    assert!(rejects_file.exists(), "today's rejects file was deleted");
}
