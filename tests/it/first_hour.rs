//! A new user's first commands: `tapline init` for each entity (validated, then uploaded to the
//! sandbox), shell completions, the man page, and host names where addresses are asked for.

use crate::common;

use common::*;
use tapline::sandbox::SandboxConfig;

#[test]
fn init_writes_a_pipeline_that_validates_and_uploads_for_each_entity() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    for (entity, name) in [
        ("user-profiles", "profiles"),
        ("user-events", "events"),
        ("custom-list", "audience"),
    ] {
        let output = tapline(dir, &["init", "pipelines", "--entity", entity]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let printed = stdout(&output);
        assert!(
            printed.contains(&format!("wrote pipelines/{name}.yaml\n"))
                && printed.contains(&format!("wrote pipelines/data/{name}.csv\n"))
                && printed.contains(&format!("tapline run pipelines/{name}.yaml --sandbox")),
            "{printed}"
        );
        let pipeline = std::fs::read_to_string(dir.join(format!("pipelines/{name}.yaml"))).unwrap();
        assert!(
            pipeline.starts_with("# yaml-language-server: $schema=pipeline.schema.json\n"),
            "{pipeline}"
        );
    }
    // The schemas editors read are the ones `tapline schema` prints.
    let schema = std::fs::read_to_string(dir.join("pipelines/pipeline.schema.json")).unwrap();
    assert_eq!(schema, stdout(&tapline(dir, &["schema"])));

    // A CI job without secrets: valid, with warnings naming what a run will need.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"));
    let clean = command
        .args(["validate", "pipelines"])
        .current_dir(dir)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert!(stderr(&clean).contains("`CLEVERTAP_PASSCODE` is not set"));
    assert_eq!(
        stdout(&clean).matches("ok  ").count(),
        3,
        "{}",
        stdout(&clean)
    );

    // Every starter uploads as it is.
    let output = tapline(
        dir,
        &[
            "run",
            "pipelines/profiles.yaml",
            "pipelines/events.yaml",
            "pipelines/audience.yaml",
            "--sandbox",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let printed = stdout(&output);
    assert_eq!(printed.matches(": succeeded").count(), 3, "{printed}");
    assert_eq!(
        printed.matches("3 read · 3 accepted").count(),
        3,
        "{printed}"
    );

    // Nothing is overwritten, not even in part.
    let before = std::fs::read_to_string(dir.join("pipelines/data/profiles.csv")).unwrap();
    let output = tapline(dir, &["init", "pipelines"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("error: `pipelines/profiles.yaml` exists; nothing was written"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("pipelines/data/profiles.csv")).unwrap(),
        before
    );
    // Another name in the same folder keeps its connections.yaml.
    let output = tapline(dir, &["init", "pipelines", "--name", "vip"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stdout(&output).contains("connections.yaml"));
    let output = tapline(dir, &["init", "pipelines", "--name", "../escape"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definition() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    for (shell, marker) in [
        ("bash", "complete -F _tapline"),
        ("zsh", "#compdef tapline"),
        ("fish", "complete -c tapline"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let output = tapline(dir, &["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}");
        let script = stdout(&output);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("replay") && script.contains("init"),
            "{shell}"
        );
    }
    let output = tapline(dir, &["man"]);
    assert_eq!(output.status.code(), Some(0));
    let page = stdout(&output);
    assert!(
        page.starts_with(".ie") && page.contains(".TH tapline 1"),
        "{page}"
    );
    // Each subcommand has its section, with every option its `--help` lists.
    for command in [
        "validate",
        "run",
        "daemon",
        "history",
        "replay",
        "init",
        "state forget",
    ] {
        let heading = format!(".SH \"TAPLINE {}\"", command.to_uppercase());
        assert!(page.contains(&heading), "{heading} in the man page");
    }
    let run = &page[page.find(".SH \"TAPLINE RUN\"").unwrap()..];
    let run = &run[..run[1..].find(".SH ").unwrap()];
    for option in [
        "dry\\-run",
        "sandbox",
        "fresh",
        "force",
        "full",
        "history\\-days",
    ] {
        assert!(
            run.contains(&format!("\\-\\-{option}")),
            "--{option} in:\n{run}"
        );
    }
}

#[test]
fn listen_addresses_take_host_names_and_log_format_is_explained_once() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    let mut sandbox = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(["sandbox", "--listen", "localhost:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sandbox.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    assert!(
        line.starts_with("http://127.0.0.1:") || line.starts_with("http://[::1]:"),
        "{line}"
    );

    let output = tapline(dir, &["sandbox", "--listen", "nowhere.invalid:80"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is not HOST:PORT"),
        "{}",
        stderr(&output)
    );

    let output = tapline(dir, &["run", "--help"]);
    let help = stdout(&output);
    let line = help
        .lines()
        .find(|line| line.contains("--log-format"))
        .unwrap();
    assert!(line.contains("text, json"), "{line}");
    assert!(
        !help.contains("native journal entries with fields"),
        "{help}"
    );
}

#[test]
fn the_events_starter_sends_amount_as_a_number() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    let output = tapline(dir, &["init", "pipelines", "--entity", "user-events"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = tapline(
        dir,
        &["run", "pipelines/events.yaml", "--dry-run", "--json"],
    );
    let summary = summary(&output);
    assert_eq!(
        summary["dry_run"]["sample"]["evtData"]["Amount"],
        serde_json::json!(49.5),
        "{summary}"
    );
}

#[test]
fn a_dry_run_says_what_it_would_refuse_and_writes_no_rejects_file() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "people.csv",
        "identity,Email\nu1,u1@example.com\nu2,not an email\n",
    );
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run_json(&workspace, &["people.yaml", "--dry-run"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["skipped"], 1, "{summary}");
    assert_eq!(
        summary["rejects_file"],
        serde_json::Value::Null,
        "{summary}"
    );
    assert_eq!(summary["reasons"][0]["example_line"], 3, "{summary}");
    assert!(!workspace.path(".tapline/rejects").exists());
}

#[test]
fn an_up_to_date_changes_pipeline_points_at_full() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("people.csv", "identity,Plan\nu1,gold\n");
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\nsend: changes\n",
    );
    let output = tapline(workspace.dir.path(), &["run", "people.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = tapline(workspace.dir.path(), &["run", "people.yaml"]);
    assert!(
        stdout(&output).contains("up to date")
            && stdout(&output).contains("`--full` sends every record again"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn colour_follows_the_color_flag() {
    let workspace = Workspace::new();
    // A query source logs that it reads the query's rows (at info) before it finds nobody
    // listening on port 1.
    workspace.write(
        "q.yaml",
        "connection: {account_id: A, passcode_file: passcode.txt}\nsource:\n  database: {postgres: \"postgres://tapline@127.0.0.1:1/db?connect_timeout=2\"}\n  query: SELECT 'u1' AS identity\ntarget: {entity: user_profiles}\n",
    );
    let log = |color: &str| {
        let output = tapline_with_env(
            workspace.dir.path(),
            &["--color", color, "run", "q.yaml", "--sandbox"],
            &[("TAPLINE_LOG", "info")],
        );
        let log = stderr(&output);
        assert!(log.contains("reading the query's rows"), "{log}");
        log
    };
    assert!(log("always").contains('\u{1b}'), "coloured into a pipe");
    assert!(!log("never").contains('\u{1b}'));
    assert!(!log("auto").contains('\u{1b}'), "not a terminal: no colour");
}

#[test]
fn the_sandbox_passcode_to_a_local_sandbox_is_no_secret() {
    let workspace = Workspace::new();
    workspace.write("people.csv", "identity\nu1\n");
    let pipeline = |passcode: &str, endpoint: &str| {
        workspace.write(
            "people.yaml",
            format!(
                "connection: {{account_id: TAPLINE-SANDBOX, passcode: {passcode}, endpoint: \"{endpoint}\"}}\nsource: {{path: people.csv}}\ntarget: {{entity: user_profiles}}\n"
            ),
        );
        stderr(&tapline(workspace.dir.path(), &["validate", "people.yaml"]))
    };
    let local = pipeline(tapline::sandbox::DEFAULT_PASSCODE, "http://127.0.0.1:9000");
    assert!(!local.contains("is written in the file"), "{local}");
    let real = pipeline("a-real-passcode", "http://127.0.0.1:9000");
    assert!(real.contains("is written in the file"), "{real}");
    let remote = pipeline(
        tapline::sandbox::DEFAULT_PASSCODE,
        "https://in1.api.clevertap.com",
    );
    assert!(remote.contains("is written in the file"), "{remote}");
}

#[test]
fn replay_sends_to_the_built_in_sandbox_too() {
    let workspace = Workspace::new();
    // A pipeline whose real account is not set on this machine: the sandbox needs none.
    workspace.write(
        "people.yaml",
        "connection: {account_id: \"${NOT_SET_HERE}\", passcode: \"${NOT_SET_EITHER}\"}\nsource: {path: people.csv}\ntarget: {entity: user_profiles}\n",
    );
    workspace.write("people.csv", "identity\nu1\n");
    workspace.write(
        "fixed.jsonl",
        concat!(
            r#"{"line":2,"outcome":"skipped","code":"515","reason":"x","row":{"identity":"u2","Email":"u2@example.com"}}"#,
            "\n"
        ),
    );
    let output = tapline(
        workspace.dir.path(),
        &[
            "replay",
            "fixed.jsonl",
            "--pipeline",
            "people.yaml",
            "--sandbox",
            "--json",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = summary(&output);
    assert_eq!(summary["records"]["accepted"], 1, "{summary}");
    assert_eq!(summary["sandbox"]["profiles"], 1, "{summary}");
    // The replay is in the history, as sent to the sandbox.
    let history = tapline(workspace.dir.path(), &["history", "--dir", ".", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(runs[0]["trigger"], "replay", "{runs}");
    assert_eq!(runs[0]["destination"], "sandbox", "{runs}");
    assert_eq!(runs[0]["records"]["accepted"], 1, "{runs}");
}

#[test]
fn sandbox_runs_are_in_the_history_with_where_every_run_went() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let (account, passcode) = sandbox.sandbox.credentials();
    workspace.write(
        "people.csv",
        "identity,Email\nu1,u1@example.com\nu2,not-an-email\n",
    );
    workspace.write(
        "sandboxed.yaml",
        "connection: {account_id: \"${NOT_SET_HERE}\", passcode: \"${NOT_SET_EITHER}\"}\nsource: {path: people.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    workspace.write(
        "real.yaml",
        format!(
            "{}source: {{path: people.csv}}\ntarget: {{entity: user_profiles}}\nskip_invalid_records: true\n",
            sandbox.connection_yaml()
        ),
    );
    let output = tapline(dir, &["run", "sandboxed.yaml", "--sandbox"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = tapline(dir, &["run", "real.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let history = tapline(dir, &["history", "--dir", ".", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(runs[0]["pipeline"], "real", "{runs}");
    assert_eq!(
        runs[0]["destination"],
        format!(
            "{account}@{}",
            sandbox.sandbox.base_url().trim_end_matches('/')
        ),
        "{runs}"
    );
    assert_eq!(runs[1]["pipeline"], "sandboxed", "{runs}");
    assert_eq!(runs[1]["destination"], "sandbox", "{runs}");
    assert_eq!(runs[1]["records"]["accepted"], 1, "{runs}");
    assert_eq!(runs[1]["records"]["skipped"], 1, "{runs}");
    assert_eq!(runs[1]["first_errors"][0]["line"], 3, "{runs}");
    let serialized = runs.to_string();
    assert!(!serialized.contains(passcode), "{serialized}");

    let table = stdout(&tapline(dir, &["history", "--dir", "."]));
    assert!(table.contains("SENT TO"), "{table}");
    assert!(
        table
            .lines()
            .any(|line| line.contains("sandboxed") && line.ends_with("  sandbox")),
        "{table}"
    );
    let run_id = runs[1]["run_id"].as_str().unwrap();
    let one = stdout(&tapline(dir, &["history", "--dir", ".", "--run", run_id]));
    assert!(one.contains("sent to   sandbox\n"), "{one}");

    // A sandbox run keeps no checkpoint or delivery: the real account's next run is not
    // told the file was delivered.
    let again = tapline(dir, &["run", "sandboxed.yaml", "--sandbox", "--json"]);
    assert_eq!(summary(&again)["records"]["accepted"], 1);
}

#[test]
fn weak_messages_name_their_fix() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("a.csv", "identity\nu1\n");
    workspace.write(
        "p.yaml",
        "connection: {account_id: A, passcode_file: passcode.txt}\nsource: {path: a.csv, timezone: Asia/Calcuta}\ntarget: {entity: user_profiles}\nschedule: {cron: \"0 3 * *\"}\n",
    );
    let errors = stderr(&tapline(dir, &["validate", "p.yaml"]));
    assert!(
        errors.contains("did you mean `Asia/Kolkata`? (`Asia/Calcutta` is its old name"),
        "{errors}"
    );
    assert!(
        errors
            .contains("it has 4 fields, and a cron expression has five, or six with seconds first")
            && !errors.contains("between 5 and 7"),
        "{errors}"
    );
    workspace.write(
        "c.yaml",
        "connection: {account_id: A, passcode_file: passcode.txt}\nsource: {path: a.csv}\ntarget:\n  entity: custom_list\n  custom_list: {name: X}\n",
    );
    let errors = stderr(&tapline(dir, &["validate", "c.yaml"]));
    assert!(
        errors.contains("add `uploader_email: admin@example.com` under `custom_list`"),
        "{errors}"
    );
    workspace.write("empty", "");
    workspace.write(
        "e.yaml",
        "connection: {account_id: A, passcode_file: empty}\nsource: {path: a.csv}\ntarget: {entity: user_profiles}\n",
    );
    let errors = stderr(&tapline(dir, &["validate", "e.yaml"]));
    assert!(
        errors.contains("passcode file `empty` is empty")
            && errors.contains("write the passcode of connection `inline` into `empty`"),
        "{errors}"
    );
    workspace.write(
        "u.yaml",
        "connection: {account_id: A, passcode_file: passcode.txt}\nsource:\n  database: {postgres: \"${TAPLINE_TEST_NO_SUCH_URL}\"}\n  query: SELECT 1 AS identity\ntarget: {entity: user_profiles}\n",
    );
    let errors = stderr(&tapline(dir, &["validate", "u.yaml"]));
    assert!(
        errors.contains("cannot connect to database `inline`: its URL is not known here"),
        "{errors}"
    );
    let output = tapline(dir, &["daemon", "p.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("`tapline daemon --dir .`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn rules_link_the_pages_that_document_them() {
    let workspace = Workspace::new();
    let output = tapline(workspace.dir.path(), &["rules"]);
    let printed = stdout(&output);
    assert!(
        printed.contains("      https://developer.clevertap.com/docs/api-errors\n")
            && printed.contains("      https://docs.clevertap.com/docs/platform-considerations\n"),
        "{printed}"
    );
    assert!(
        !printed.contains("[DOC]")
            && !printed.contains("Corrections")
            && !printed.contains("audit"),
        "{printed}"
    );
}

#[test]
fn the_stopped_line_names_the_cause_that_ends_every_request() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // Refused credentials, and an invalid row the reader meets while the first batch is out.
    workspace.write("passcode.txt", "wrong");
    workspace.write(
        "people.csv",
        "identity,Email\nu1,u1@example.com\nu2,not an email\n",
    );
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run_json(&workspace, &["people.yaml"]);
    assert_ne!(code, Some(0));
    let reason = summary["stop_reason"].to_string();
    assert!(
        reason.contains("refused the credentials") && !reason.contains("invalid record"),
        "{summary}"
    );
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let workspace = Workspace::new();
    let version = stdout(&tapline(workspace.dir.path(), &["--version"]));
    assert!(version.starts_with("tapline 0.1.0 (commit "), "{version}");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|output| output.status.success()) {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(version.contains(&head), "{version} is not of {head}");
    }
}

/// A pipeline sending to `endpoint` with a passcode from a file.
fn pipeline_to(workspace: &Workspace, endpoint: &str) {
    workspace.write("people.csv", "identity\nu1\nu2\n");
    workspace.write(
        "p.yaml",
        format!(
            "connection: {{account_id: A, passcode_file: passcode.txt, endpoint: \"{endpoint}\"}}\nsource: {{path: people.csv}}\ntarget: {{entity: user_profiles}}\n"
        ),
    );
}

#[test]
fn a_certificate_that_cannot_be_trusted_stops_the_run_at_once_naming_the_host() {
    // The sandbox speaks plain HTTP: `https://` to it fails the handshake every time.
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let endpoint = sandbox.sandbox.base_url().replace("http://", "https://");
    pipeline_to(&workspace, &endpoint);
    let summary = Tapline::new(workspace.dir.path())
        .args(["run", "p.yaml", "--json"])
        .run()
        .code(1)
        .summary();
    assert_eq!(summary["requests"], 1, "not retried: {summary}");
    let stopped = summary["stop_reason"].as_str().unwrap();
    assert!(
        stopped.contains("cannot reach 127.0.0.1: the TLS handshake failed")
            && stopped.contains("`http://` server given as `https://`?"),
        "{stopped}"
    );
    assert_eq!(summary["records"]["failed"], 2, "{summary}");
}

#[test]
fn a_refused_connection_is_retried_visibly_then_given_up_within_its_patience() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let workspace = Workspace::new();
    pipeline_to(&workspace, &format!("http://127.0.0.1:{port}"));
    let ran = Tapline::new(workspace.dir.path())
        .args(["run", "p.yaml", "--json"])
        .run()
        .code(1);
    let log = ran.stderr();
    assert!(
        log.contains("retrying (attempt 2 of 10): cannot connect to 127.0.0.1: Connection refused"),
        "{log}"
    );
    let summary = ran.summary();
    // The back-off's ceiling doubles from 250 ms: within the 15 s of patience there is
    // room for 6 or 7 attempts, never the 10 of a server that answers 503.
    let requests = summary["requests"].as_u64().unwrap();
    assert!((6..=7).contains(&requests), "{summary}");
    let stopped = summary["stop_reason"].as_str().unwrap();
    assert!(
        stopped.contains("cannot connect to 127.0.0.1: Connection refused"),
        "{stopped}"
    );
}

#[test]
fn a_host_name_that_does_not_exist_is_not_retried() {
    // `.invalid` never exists (RFC 6761); the machine's resolver must say so. Where it
    // cannot be asked (no network), the failure is a resolver that did not answer, which
    // is retried as it should be: there is nothing to check here then.
    let resolved = std::net::ToSocketAddrs::to_socket_addrs("tapline-test.invalid:443");
    match resolved {
        Err(error) if error.to_string().contains("Name or service not known") => {}
        other => {
            assert!(
                std::env::var_os("TAPLINE_TEST_POSTGRES_REQUIRED").is_none(),
                "in CI the resolver answers: {other:?}"
            );
            eprintln!("skipped: this machine's resolver did not answer ({other:?})");
            return;
        }
    }
    let workspace = Workspace::new();
    pipeline_to(&workspace, "https://tapline-test.invalid");
    let summary = Tapline::new(workspace.dir.path())
        .args(["run", "p.yaml", "--json"])
        .run()
        .code(1)
        .summary();
    assert_eq!(summary["requests"], 1, "{summary}");
    let stopped = summary["stop_reason"].as_str().unwrap();
    assert!(
        stopped.contains("the name `tapline-test.invalid` does not exist")
            && stopped.contains("check the connection's region or endpoint"),
        "{stopped}"
    );
}
