//! The state store seen from the command line: killed runs resume, delivered files are not
//! sent twice, the history, replaying rejects, the error budget and the pipeline lock.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tapline::sandbox::SandboxConfig;

fn run_json(workspace: &Workspace, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["run", "--json"];
    all.extend_from_slice(args);
    let output = tapline(workspace.dir.path(), &all);
    (output.status.code(), summary(&output))
}

fn history_json(workspace: &Workspace, args: &[&str]) -> Value {
    let mut all = vec!["history", "--dir", ".", "--json"];
    all.extend_from_slice(args);
    let output = tapline(workspace.dir.path(), &all);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("history --json is JSON")
}

#[test]
fn killed_runs_resume_and_resend_only_the_batches_not_yet_checkpointed() {
    const ROWS: usize = 40_000;
    const THREADS: u64 = 4;
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(100),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(ROWS));
    workspace.pipeline(
        "vip",
        &sandbox,
        &format!("source: {{path: profiles.csv}}\ntarget: {{entity: user_profiles}}\nthread_count: {THREADS}\n"),
    );

    // Kill the binary (SIGKILL: no chance to clean up) at later and later points until a
    // run gets to the end by itself: attempt N is killed once the sandbox has received
    // 2000 × (N + 1) more records, so the kills land mid-run on a fast or a slow machine.
    let mut kills = 0;
    let mut finished = None;
    for attempt in 0..30 {
        let received_before = sandbox.inspect().profiles;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapline"))
            .args(["run", "vip.yaml", "--json"])
            .current_dir(workspace.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tapline starts");
        let kill_at = received_before + 2000 * (attempt + 1);
        wait_until(60, &format!("progress of attempt {attempt}"), || {
            // Not once every record has arrived: the run may be recording its delivery,
            // and a kill then would leave the next run nothing to resume.
            let seen = sandbox.inspect();
            (seen.profiles >= kill_at && seen.distinct_profiles < ROWS)
                || child.try_wait().expect("wait").is_some()
        });
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
            kills += 1;
        } else {
            finished = Some(child.wait_with_output().expect("output"));
            break;
        }
    }
    let output = finished.expect("a run finished within 30 attempts");
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let last = summary(&output);
    assert_counts_add_up(&last);

    let seen = sandbox.inspect();
    let duplicates = seen.profiles - seen.distinct_profiles as u64;
    eprintln!(
        "kill test: {kills} kills, {ROWS} records, {} received, {duplicates} duplicates",
        seen.profiles
    );
    assert!(kills >= 3, "only {kills} kills happened mid-run");
    assert_eq!(seen.distinct_profiles, ROWS, "every record arrived");
    // Only batches in flight at a kill, and those settled since the last checkpoint write
    // (one write per half the requests in flight), may be sent twice.
    let batches_per_kill = THREADS + THREADS.div_ceil(2) - 1;
    assert!(
        duplicates <= kills * batches_per_kill * 1000,
        "{duplicates} duplicates after {kills} kills"
    );
    assert!(
        last["rows_resumed"].as_u64().unwrap() > 0,
        "the last run resumed: {last}"
    );
    assert_eq!(
        last["rows_resumed"].as_u64().unwrap() + last["records"]["read"].as_u64().unwrap(),
        ROWS as u64,
        "the last run read what earlier runs had not settled: {last}"
    );

    // The history shows the killed runs as abandoned and the last as succeeded. (A process
    // killed while it was still starting never got to record its run.)
    let runs = history_json(&workspace, &["vip"]);
    let runs = runs.as_array().unwrap();
    assert!(
        runs.len() >= 2 && runs.len() as u64 <= kills + 1,
        "{runs:?}"
    );
    assert_eq!(runs[0]["status"], "succeeded");
    assert!(
        runs[1..].iter().all(|run| run["status"] == "abandoned"),
        "{runs:?}"
    );
    // Each checkpoint also records the counts so far, so a killed run shows how far it got.
    assert!(
        runs[1..]
            .iter()
            .any(|run| run["records"]["accepted"].as_u64() > Some(0)),
        "{runs:?}"
    );

    // The file is delivered: running again sends nothing.
    let requests = sandbox.inspect().requests;
    let (code, again) = run_json(&workspace, &["vip.yaml"]);
    assert_eq!(code, Some(0));
    assert_eq!(again["up_to_date"], last["run_id"]);
    assert_eq!(sandbox.inspect().requests, requests);
}

#[test]
fn a_delivered_file_is_sent_again_only_when_changed_forced_or_asked_for() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "events.csv",
        "identity,evtName,ts\nu1,Viewed,1764300000\nu2,Viewed,1764300000\n",
    );
    let body = "source: {path: events.csv}\ntarget: {entity: user_events}\n";
    workspace.pipeline("events", &sandbox, body);

    let (code, first) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(
        (code, first["records"]["accepted"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(first["up_to_date"], Value::Null);

    // The same file again: nothing sent, and the summary says why.
    let (code, second) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(code, Some(0), "an up-to-date run succeeds");
    assert_eq!(second["up_to_date"], first["run_id"]);
    assert_eq!(second["records"]["read"], 0);
    assert_eq!(sandbox.inspect().events, 2);
    let text = stdout(&tapline(workspace.dir.path(), &["run", "events.yaml"]));
    assert!(text.contains("up to date, nothing sent"), "{text}");
    assert!(text.contains("--force"), "{text}");

    // --force sends it again.
    let (_, forced) = run_json(&workspace, &["events.yaml", "--force"]);
    assert_eq!(forced["records"]["accepted"], 2);
    assert_eq!(sandbox.inspect().events, 4);

    // A touched file with the same bytes is still the same file.
    let path = workspace.path("events.csv");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let (_, touched) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(touched["up_to_date"], forced["run_id"]);

    // New content is sent.
    workspace.write("events.csv", "identity,evtName,ts\nu3,Viewed,1764300000\n");
    let (_, changed) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(changed["records"]["accepted"], 1);
    assert_eq!(sandbox.inspect().events, 5);

    // `rerun: always` sends on every run.
    workspace.pipeline("events", &sandbox, &format!("{body}rerun: always\n"));
    let (_, always) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(always["records"]["accepted"], 1);
    assert_eq!(sandbox.inspect().events, 6);
}

#[test]
fn an_unfinished_run_resumes_unless_the_file_changed_or_fresh_is_asked() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // 2500 valid rows, then one without an identity, then 10 more: the invalid row stops
    // the run after the first batches settled.
    let mut csv = profile_csv(2500);
    csv.push_str(",Nobody,,,,,\n");
    for i in 0..10 {
        csv.push_str(&format!("late-{i},Late,,,,,\n"));
    }
    workspace.write("profiles.csv", &csv);
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\n",
    );
    let (code, stopped) = run_json(&workspace, &["vip.yaml"]);
    assert_eq!(code, Some(1));
    assert!(
        stopped["stop_reason"]
            .as_str()
            .unwrap()
            .contains("line 2502"),
        "{stopped}"
    );
    assert_eq!(stopped["records"]["accepted"], 2500);

    // Run again: the 2500 settled rows are not sent again; the invalid row stops it again.
    let (code, resumed) = run_json(&workspace, &["vip.yaml"]);
    assert_eq!(code, Some(1));
    assert_eq!(resumed["resumed_from"], stopped["run_id"]);
    assert_eq!(resumed["rows_resumed"], 2500);
    assert_eq!(resumed["records"]["accepted"], 0);
    assert_eq!(sandbox.inspect().profiles, 2500);

    // The row is fixed: the file changed, so the run starts over and says why.
    workspace.write("profiles.csv", csv.replace(",Nobody,", "fixed,Nobody,"));
    let (code, fresh) = run_json(&workspace, &["vip.yaml"]);
    assert_eq!(code, Some(0), "{fresh}");
    assert_eq!(fresh["resumed_from"], Value::Null);
    assert_eq!(fresh["records"]["accepted"], 2511);
    let warnings = fresh["warnings"].to_string();
    assert!(
        warnings.contains("the source changed since run"),
        "{warnings}"
    );

    // --fresh ignores a checkpoint.
    workspace.write("profiles.csv", &csv);
    let (_, first) = run_json(&workspace, &["vip.yaml"]);
    assert_eq!(first["records"]["accepted"], 2500);
    let (_, again) = run_json(&workspace, &["vip.yaml", "--fresh"]);
    assert_eq!(again["resumed_from"], Value::Null);
    assert_eq!(again["records"]["accepted"], 2500);
}

#[test]
fn history_lists_runs_and_shows_one_with_its_first_errors() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "events.csv",
        "identity,evtName,ts\nu1,Viewed,1764300000\nu2,,1764300000\nu3,Viewed,1764300000\n",
    );
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\nskip_invalid_records: true\n",
    );
    let (_, run) = run_json(&workspace, &["events.yaml"]);
    let run_id = run["run_id"].as_str().unwrap();

    let runs = history_json(&workspace, &[]);
    assert_eq!(runs[0]["run_id"], run_id);
    assert_eq!(runs[0]["trigger"], "manual");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(
        runs[0]["records"],
        json!({"read": 3, "accepted": 2, "skipped": 1, "rejected": 0, "failed": 0})
    );
    assert_eq!(history_json(&workspace, &["other"]), json!([]));

    let one = history_json(&workspace, &["--run", run_id]);
    assert_eq!(one["first_errors"][0]["line"], 3);
    assert!(one["rejects_file"].as_str().unwrap().ends_with(".jsonl"));

    let table = stdout(&tapline(workspace.dir.path(), &["history", "--dir", "."]));
    assert!(table.starts_with("RUN"), "{table}");
    assert!(
        table.contains(run_id) && table.contains("succeeded"),
        "{table}"
    );
    let detail = stdout(&tapline(
        workspace.dir.path(),
        &["history", "--dir", ".", "--run", run_id],
    ));
    assert!(
        detail.contains("line 3: [510]") || detail.contains("line 3: ["),
        "{detail}"
    );
    assert!(detail.contains("tapline replay"), "{detail}");

    let missing = tapline(
        workspace.dir.path(),
        &["history", "--dir", ".", "--run", "nope"],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no run `nope`"));

    // The passcode is never written to the state store.
    let database = std::fs::read(workspace.path(".tapline/state.db")).unwrap();
    let passcode = tapline::sandbox::DEFAULT_PASSCODE.as_bytes();
    assert!(
        !database
            .windows(passcode.len())
            .any(|window| window == passcode)
    );
}

#[test]
fn replay_sends_fixed_rejects_through_the_pipeline_that_wrote_them() {
    let sandbox = TestSandbox::start(SandboxConfig {
        discarded_events: vec!["Old Promo".into()],
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write(
        "events.csv",
        "identity,evtName,ts\nu1,Viewed,1764300000\nu2,,1764300000\nu3,Old Promo,1764300000\n",
    );
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\nskip_invalid_records: true\n",
    );
    let (code, run) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(code, Some(1), "a rejected record fails the run: {run}");
    let rejects_file = run["rejects_file"].as_str().unwrap().to_string();
    let entries = rejects(workspace.dir.path(), &run);
    assert_eq!(entries.len(), 2);

    // Fix both: the skipped row gets its event name, the rejected record another name.
    let fixed: String = entries
        .iter()
        .map(|entry| {
            let mut entry = entry.clone();
            if entry.get("record").is_some() {
                entry["record"]["evtName"] = json!("Promo");
            } else {
                entry["row"]["evtName"] = json!("Viewed");
            }
            format!("{entry}\n")
        })
        .collect();
    std::fs::write(workspace.dir.path().join(&rejects_file), fixed).unwrap();

    let output = tapline(workspace.dir.path(), &["replay", &rejects_file, "--json"]);
    let replayed = summary(&output);
    assert_eq!(output.status.code(), Some(0), "{replayed}");
    assert_eq!(
        replayed["records"],
        json!({"read": 2, "accepted": 2, "skipped": 0, "rejected": 0, "failed": 0})
    );
    assert_eq!(sandbox.inspect().events, 3);
    let runs = history_json(&workspace, &["events"]);
    assert_eq!(runs[0]["trigger"], "replay");

    // A raw malformed row cannot be replayed as it is; the error says how to fix it.
    workspace.write(
        "raw.jsonl",
        r#"{"line":7,"outcome":"skipped","code":"malformed_row","reason":"x","row":"a,b"}"#,
    );
    // `--pipeline` takes a name, as `tapline history` shows it, or a file.
    let output = tapline(
        workspace.dir.path(),
        &["replay", "raw.jsonl", "--pipeline", "events", "--json"],
    );
    assert_eq!(
        summary(&output)["pipeline"],
        "events",
        "{}",
        stderr(&output)
    );
    let output = tapline(
        workspace.dir.path(),
        &["replay", "raw.jsonl", "--pipeline", "events.yaml", "--json"],
    );
    let raw = summary(&output);
    assert_eq!(raw["records"]["skipped"], 1);
    // Printed relative to the working directory, as after `run`.
    assert!(
        raw["rejects_file"]
            .as_str()
            .unwrap()
            .starts_with(".tapline/rejects/events-"),
        "{raw}"
    );
    let entries = rejects(workspace.dir.path(), &raw);
    assert_eq!(entries[0]["line"], 7);
    assert!(
        entries[0]["reason"]
            .as_str()
            .unwrap()
            .contains("as a JSON object")
    );

    // Without --pipeline, a file the history does not know is refused with a hint.
    let output = tapline(workspace.dir.path(), &["replay", "raw.jsonl"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--pipeline"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_error_budget_stops_a_broken_file_early() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // Every third row has no identity.
    let mut csv = String::from("identity,Name\n");
    for i in 0..3000 {
        if i % 3 == 0 {
            csv.push_str(",Nobody\n");
        } else {
            csv.push_str(&format!("u{i},User\n"));
        }
    }
    workspace.write("profiles.csv", &csv);
    // Each run starts `--fresh`: a stopped run leaves a checkpoint the next would resume.
    let base = "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n";

    workspace.pipeline("vip", &sandbox, &format!("{base}max_invalid_records: 50\n"));
    let (code, by_count) = run_json(&workspace, &["vip.yaml", "--fresh"]);
    assert_eq!(code, Some(1), "{by_count}");
    assert_counts_add_up(&by_count);
    // The 51st invalid row stops the run; rows the reader had already handed over are
    // accounted for too, so a few more may count as skipped.
    let skipped = by_count["records"]["skipped"].as_u64().unwrap();
    assert!((51..=60).contains(&skipped), "{by_count}");
    assert!(
        by_count["records"]["read"].as_u64().unwrap() < 200,
        "{by_count}"
    );
    assert!(
        by_count["stop_reason"]
            .as_str()
            .unwrap()
            .contains("max_invalid_records (50)"),
        "{by_count}"
    );

    workspace.pipeline("vip", &sandbox, &format!("{base}max_invalid_ratio: 0.1\n"));
    let (code, by_ratio) = run_json(&workspace, &["vip.yaml", "--fresh"]);
    assert_eq!(code, Some(1));
    assert!(
        by_ratio["stop_reason"]
            .as_str()
            .unwrap()
            .contains("max_invalid_ratio")
    );
    assert!(
        by_ratio["records"]["read"].as_u64().unwrap() < 3000,
        "{by_ratio}"
    );

    // A budget the file stays within lets it through.
    workspace.pipeline("vip", &sandbox, &format!("{base}max_invalid_ratio: 0.5\n"));
    let (code, within) = run_json(&workspace, &["vip.yaml", "--fresh"]);
    assert_eq!(code, Some(0), "{within}");
    assert_eq!(within["records"]["skipped"], 1000);

    // Without skip_invalid_records the budget means nothing: validate says so.
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nmax_invalid_ratio: 0.5\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "vip.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("`max_invalid_ratio` needs `skip_invalid_records: true`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn one_pipeline_never_runs_twice_at_once() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(5000));
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\n",
    );
    let mut first = Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(["run", "vip.yaml", "--json"])
        .current_dir(workspace.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tapline starts");
    // Wait until the first run holds the lock (it has sent a request).
    let deadline = Instant::now() + Duration::from_secs(20);
    while sandbox.inspect().requests == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, second) = run_json(&workspace, &["vip.yaml"]);
    assert_eq!(code, Some(1));
    assert!(
        second["error"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{second}"
    );
    assert_eq!(first.wait().expect("first run ends").code(), Some(0));
    assert_eq!(sandbox.inspect().profiles, 5000);
}

#[test]
fn the_state_directory_comes_from_the_flag_or_systemd() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\n",
    );
    let output = tapline_with_env(
        workspace.dir.path(),
        &["run", "events.yaml", "--json"],
        &[("STATE_DIRECTORY", "systemd-state")],
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(workspace.path("systemd-state/state.db").exists());
    assert!(!workspace.path(".tapline/state.db").exists());

    let output = tapline(
        workspace.dir.path(),
        &["run", "events.yaml", "--json", "--state-dir", "elsewhere"],
    );
    assert_eq!(
        summary(&output)["records"]["accepted"],
        1,
        "a new state knows nothing"
    );
    assert!(workspace.path("elsewhere/state.db").exists());

    // A state store from a newer tapline is refused, not damaged.
    let connection = rusqlite::Connection::open(workspace.path("elsewhere/state.db")).unwrap();
    connection
        .execute_batch("PRAGMA user_version = 999")
        .unwrap();
    drop(connection);
    let output = tapline(
        workspace.dir.path(),
        &["run", "events.yaml", "--json", "--state-dir", "elsewhere"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        summary(&output)["error"]
            .as_str()
            .unwrap()
            .contains("upgrade tapline")
    );
}

#[test]
fn history_retention_prunes_old_runs_with_their_rejects_files() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "profiles.csv",
        "identity,Email\nu1,u1@example.com\nu2,not-an-email\n",
    );
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, first) = run_json(&workspace, &["vip.yaml"]);
    assert_eq!(code, Some(0), "{first}");
    let first_rejects = workspace
        .dir
        .path()
        .join(first["rejects_file"].as_str().expect("a rejects file"));
    assert!(first_rejects.exists());

    // The default keeps 90 days: a second run keeps the first.
    let (_, second) = run_json(&workspace, &["vip.yaml", "--force"]);
    assert!(first_rejects.exists());
    assert_eq!(history_json(&workspace, &[]).as_array().unwrap().len(), 2);

    // Keeping 0 days prunes every earlier run, and its rejects file, when the next run starts.
    let (_, third) = run_json(&workspace, &["vip.yaml", "--force", "--history-days", "0"]);
    assert!(
        !first_rejects.exists(),
        "the first run's rejects file is deleted"
    );
    let history = history_json(&workspace, &[]);
    let kept: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [third["run_id"].as_str().unwrap()], "{second}");
    assert!(
        workspace
            .dir
            .path()
            .join(third["rejects_file"].as_str().unwrap())
            .exists()
    );
}

#[test]
fn many_processes_starting_at_once_on_a_new_state_directory_all_run() {
    const PROCESSES: usize = 10;
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    for index in 0..PROCESSES {
        workspace.pipeline(
            &format!("p{index}"),
            &sandbox,
            "source: {path: events.csv}\ntarget: {entity: user_events}\n",
        );
    }
    // All start before any has created the store: each one migrates it, or waits for the
    // one that does.
    let children: Vec<_> = (0..PROCESSES)
        .map(|index| {
            Command::new(env!("CARGO_BIN_EXE_tapline"))
                .args(["run", &format!("p{index}.yaml"), "--json"])
                .current_dir(workspace.dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("tapline starts")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("ends");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            stdout(&output),
            stderr(&output)
        );
    }
    assert_eq!(sandbox.inspect().events, PROCESSES as u64);
    let runs = history_json(&workspace, &[]);
    assert_eq!(runs.as_array().map(Vec::len), Some(PROCESSES));
}
