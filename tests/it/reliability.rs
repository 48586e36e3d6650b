//! The ways an unfriendly world loses records, each kept as a scenario against the real
//! binary and the sandbox so that it cannot come back: broken files, pipelines changed
//! between runs, files changed during a run, interrupted daemons.

use crate::common;

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

#[test]
fn terminal_escapes_in_source_values_are_printed_escaped() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "people.csv",
        "identity,Email\nu1,a@example.com\nu2,\u{1b}]0;owned\u{7}\u{1b}[2J@x\n",
    );
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run(&workspace, &["people.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    let run_id = summary["run_id"].as_str().unwrap();
    let shown = tapline(
        workspace.dir.path(),
        &["history", "--dir", ".", "--run", run_id],
    );
    let text = stdout(&shown) + &stderr(&shown);
    assert!(text.contains("line 3"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );

    // A file name from the pipeline file reaches the terminal escaped too.
    workspace.pipeline(
        "named",
        &sandbox,
        "source: {path: \"ex\\e[2Jport.csv\"}\ntarget: {entity: user_profiles}\n",
    );
    let validate = tapline(workspace.dir.path(), &["validate", "named.yaml"]);
    let errors = stderr(&validate);
    assert_eq!(validate.status.code(), Some(2), "{errors}");
    assert!(errors.contains("ex\\u{1b}[2Jport.csv"), "{errors:?}");
    assert!(!errors.contains('\u{1b}'), "{errors:?}");
}

#[test]
fn hostile_files_are_refused_or_warned_about_clearly() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    let body = "source: {path: events.csv}\ntarget: {entity: user_events}\n";
    let mkfifo = |name: &str| {
        let status = std::process::Command::new("mkfifo")
            .arg(dir.join(name))
            .status()
            .unwrap();
        assert!(status.success());
    };
    // A passcode file that never ends, a pipeline file and a source that are FIFOs.
    workspace.write(
        "zero.yaml",
        format!("connection: {{account_id: A, passcode_file: /dev/zero}}\n{body}"),
    );
    mkfifo("fifo.yaml");
    mkfifo("live.csv");
    workspace.write(
        "live.yaml",
        "connection: {account_id: A, passcode_file: passcode.txt}\nsource: {path: live.csv}\ntarget: {entity: user_events}\n",
    );
    let output = tapline(dir, &["validate", "zero.yaml", "fifo.yaml", "live.yaml"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{errors}");
    assert!(
        errors
            .contains("cannot read passcode file `/dev/zero`: it is a device, not a regular file"),
        "{errors}"
    );
    assert!(
        errors.contains("fifo.yaml: error: cannot read the file: it is a FIFO"),
        "{errors}"
    );
    assert!(
        errors.contains("source `") && errors.contains("live.csv` is a FIFO"),
        "{errors}"
    );

    // Warnings: a passcode file others can read, plain http off this machine, a cron that
    // never fires.
    workspace.write("open-passcode.txt", "secret");
    std::fs::set_permissions(
        workspace.path("open-passcode.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    workspace.write(
        "warned.yaml",
        format!("connection: {{account_id: A, passcode_file: open-passcode.txt, endpoint: \"http://proxy.example.com:8080\"}}\n{body}schedule: {{cron: \"0 0 31 2 *\"}}\n"),
    );
    let output = tapline(dir, &["validate", "warned.yaml"]);
    let warnings = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{warnings}");
    assert!(
        warnings.contains("can be read by every user of this machine"),
        "{warnings}"
    );
    assert!(warnings.contains("chmod 600"), "{warnings}");
    assert!(
        warnings.contains("is plain http to another machine"),
        "{warnings}"
    );
    assert!(warnings.contains("`0 0 31 2 *` never fires"), "{warnings}");

    // Two file names that are not UTF-8 do not become one pipeline.
    let folder = workspace.path("odd");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(workspace.path("events.csv"), folder.join("events.csv")).unwrap();
    for name in [&b"a\xff.yaml"[..], &b"a\xfe.yaml"[..]] {
        let path = folder.join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(
            path,
            format!("connection: {{account_id: A, passcode: P}}\n{body}"),
        )
        .unwrap();
    }
    let output = tapline(dir, &["validate", "odd"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{errors}");
    assert_eq!(
        errors.matches("is not plain UTF-8 text").count(),
        2,
        "{errors}"
    );
}

#[test]
fn the_sandbox_does_not_print_a_passcode_it_was_given() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--passcode",
            "TOP-SECRET-PASSCODE",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    // It says where it listens on stderr once it does.
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.take().unwrap()),
        &mut said,
    )
    .unwrap();
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("http://127.0.0.1:"));
    assert!(said.contains("listening on"), "{said}");
    assert!(!said.contains("TOP-SECRET-PASSCODE"), "{said}");
}
