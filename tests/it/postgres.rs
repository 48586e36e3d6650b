//! Query sources against a real PostgreSQL server: types as CleverTap wants them, a killed
//! run resumed from its snapshot (not a new query), incremental watermarks, errors that name
//! the database and never its password, and `validate` describing the query's columns.
//!
//! They need a server: `TAPLINE_TEST_POSTGRES` is its URL (default
//! `postgres://postgres@127.0.0.1:5432/tapline_test?sslmode=disable`; `createdb tapline_test`
//! makes the database). Without one they are skipped with a message, except under
//! `.ci/run`, which starts the server and sets `TAPLINE_TEST_POSTGRES_REQUIRED`.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tapline::sandbox::SandboxConfig;

/// How many query snapshots the state folder holds.
fn snapshots(workspace: &Workspace) -> usize {
    std::fs::read_dir(workspace.path(".tapline/snapshots")).map_or(0, |entries| {
        entries
            .filter(|entry| {
                entry.as_ref().is_ok_and(|entry| {
                    entry
                        .path()
                        .extension()
                        .is_some_and(|ext| ext == "snapshot")
                })
            })
            .count()
    })
}

fn run(workspace: &Workspace, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["pipeline.yaml"];
    args.extend_from_slice(extra);
    run_json(workspace, &args)
}

#[test]
fn every_postgres_type_becomes_the_json_clevertap_wants() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.users (
            id bigint, small smallint, whole integer, real_ float4, double float8,
            balance numeric(12,2), vip boolean, email varchar(80), code char(3), note text,
            born date, seen timestamp, changed timestamptz, tags text[], prefs jsonb, raw json,
            uid uuid);
         INSERT INTO $schema.users VALUES
           (1, 7, 31, 0.5, 99.25, 12.50, true, 'a@example.com', 'abc', 'hé',
            '1990-05-01', '2024-05-01 10:00:00', '2024-05-01 10:00:00+02', ARRAY['golf', NULL, 'chess'],
            '[\"x\"]', '42', '00010203-0405-0607-0809-0a0b0c0d0e0f'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT 'u' || id AS identity, small AS "Small", whole AS "Age", real_ AS "Real",
       double AS "Double", balance AS "Balance", vip AS "VIP", email AS "Email", code AS "Code",
       note AS "Note", born AS "DOB", seen AS "Seen", changed AS "Changed", tags AS "Tags",
       prefs AS "Prefs", raw AS "Raw", uid AS "Uid"
FROM $schema.users ORDER BY id"#,
        "  timezone: Asia/Kolkata\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(
        profiles["u1"],
        json!({
            "Small": 7, "Age": 31, "Real": 0.5, "Double": 99.25, "Balance": 12.5, "VIP": true,
            "Email": "a@example.com", "Code": "abc", "Note": "hé",
            // Midnight and 10:00 in Kolkata (the source's zone); 10:00+02 is 08:00 UTC.
            "DOB": "$D_641500200", "Seen": "$D_1714537800", "Changed": "$D_1714550400",
            "Tags": ["golf", "chess"], "Prefs": ["x"], "Raw": 42,
            "Uid": "00010203-0405-0607-0809-0a0b0c0d0e0f"
        })
    );
    // NULLs are left out.
    assert_eq!(profiles["u2"], json!({}));
    // Nothing is left of the run's snapshot.
    let snapshots = workspace.path(".tapline/snapshots");
    assert_eq!(
        std::fs::read_dir(&snapshots).map_or(0, |entries| entries.count()),
        0
    );
}

#[test]
fn events_take_their_ts_from_a_timestamp_column() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.orders (user_id text, at timestamptz, amount numeric(8,2));
         INSERT INTO $schema.orders VALUES ('u1', '2024-05-01 10:00:00+00', 59.90),
                                           ('u2', '2024-05-02 11:30:00+00', 5);",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT user_id AS identity, 'Charged' AS "evtName", at AS ts, amount AS "Amount" FROM $schema.orders ORDER BY at"#,
        "target: {entity: user_events}\n",
    );
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(0), "{summary}");
    let events = sandbox.sandbox.records("event");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["ts"], 1_714_557_600);
    assert_eq!(events[0]["evtData"], json!({"Amount": 59.9}));
    assert_eq!(events[1]["ts"], 1_714_649_400);
}

#[test]
fn a_killed_run_resumes_from_its_snapshot_and_not_from_a_new_query() {
    const ROWS: usize = 20_000;
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(&format!(
        "CREATE TABLE $schema.users AS SELECT 'u' || i AS identity, 'plan-' || (i % 5) AS plan
         FROM generate_series(1, {ROWS}) i;"
    ));
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT identity, plan AS "Plan" FROM $schema.users ORDER BY identity"#,
        "target: {entity: user_profiles}\nthread_count: 2\n",
    );
    // Killed (SIGKILL) once a third of the rows has arrived, before the last has.
    kill_run_when(
        &workspace,
        &["pipeline.yaml"],
        "a third of the rows",
        || sandbox.inspect().profiles >= (ROWS / 3) as u64,
    );
    assert!(sandbox.inspect().distinct_profiles < ROWS);

    // The table changes completely: a new query would send other rows.
    database.execute(
        "DELETE FROM $schema.users;
         INSERT INTO $schema.users SELECT 'other' || i, 'x' FROM generate_series(1, 10) i;",
    );
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary["rows_resumed"].as_u64() > Some(0), "{summary}");
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(profiles.len(), ROWS, "every row the killed run read, once");
    assert!(profiles.keys().all(|identity| identity.starts_with('u')));
    // The snapshot went with the delivery; the next run reads the table as it is now.
    assert_eq!(snapshots(&workspace), 0);
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 10, "{summary}");
}

#[test]
fn an_incremental_query_reads_only_what_is_newer_than_the_last_full_delivery() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.users (identity text, email text, updated_at timestamptz);
         INSERT INTO $schema.users
         SELECT 'u' || i, 'u' || i || '@example.com', '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second'
         FROM generate_series(1, 100) i;
         -- Invalid (a bad email): rejected before sending, and never holding the watermark back.
         INSERT INTO $schema.users VALUES ('bad', 'not an email', '2026-06-01 00:00:00+00');",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT identity, email AS "Email", updated_at FROM $schema.users
WHERE $1::timestamptz IS NULL OR updated_at > $1 ORDER BY updated_at"#,
        "  incremental: {column: updated_at}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 100, "{summary}");
    assert_eq!(summary["records"]["skipped"], 1, "{summary}");

    // Nothing new: nothing read, and the summary says since when.
    let (_, summary) = run(&workspace, &[]);
    assert_eq!(summary["records"]["read"], 0, "{summary}");
    let warnings = summary["warnings"].to_string();
    assert!(
        warnings.contains("no rows since 2026-") && !warnings.contains("the source has no records"),
        "{warnings}"
    );

    // Three rows change after the watermark.
    database.execute(
        "UPDATE $schema.users SET email = 'new-' || email, updated_at = '2026-07-01 00:00:00+00'
         WHERE identity IN ('u1', 'u2', 'u3');",
    );
    let before = sandbox.inspect().requests;
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["read"], 3, "{summary}");
    assert_eq!(sandbox.inspect().requests, before + 1);
    assert_eq!(
        profiles_by_identity(&sandbox)["u2"]["Email"],
        "new-u2@example.com"
    );

    // A dry run reads what a run would: nothing new, or with `--full` every row.
    let (_, dry) = run(&workspace, &["--dry-run"]);
    assert_eq!(dry["records"]["read"], 0, "{dry}");
    let (_, dry) = run(&workspace, &["--dry-run", "--full"]);
    assert_eq!(dry["records"]["read"], 101, "{dry}");

    // `--full` binds NULL: every row again.
    let (_, summary) = run(&workspace, &["--full"]);
    assert_eq!(summary["records"]["read"], 101, "{summary}");
}

#[test]
fn a_run_that_did_not_deliver_everything_keeps_the_watermark_where_it_was() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.users (identity text, n integer);
         INSERT INTO $schema.users SELECT 'u' || i, i FROM generate_series(1, 30) i;",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT identity, n FROM $schema.users WHERE $1::integer IS NULL OR n > $1 ORDER BY n"#,
        "  incremental: {column: n}\ntarget: {entity: user_profiles}\n",
    );
    // A wrong passcode: every record fails, the snapshot and the old watermark stay.
    workspace.write("passcode.txt", "wrong");
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(1), "{summary}");
    assert_eq!(snapshots(&workspace), 1, "the snapshot stays");
    database.execute("INSERT INTO $schema.users VALUES ('late', 31);");
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    // The resumed run sends what the stopped one read: not the row added since.
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 30, "{summary}");
    assert!(!profiles_by_identity(&sandbox).contains_key("late"));
    // Then the watermark is 30, and the next run reads the one row after it.
    let (_, summary) = run(&workspace, &[]);
    assert_eq!(summary["records"]["accepted"], 1, "{summary}");
    assert!(profiles_by_identity(&sandbox).contains_key("late"));
}

#[test]
fn database_errors_name_the_pipeline_and_database_and_never_the_password() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.secret (identity text);
         INSERT INTO $schema.secret VALUES ('u1');
         DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tapline_no_rights') THEN
             CREATE ROLE tapline_no_rights LOGIN;
           END IF;
         END $$;",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let cases = [
        // Nothing listens on port 1.
        (
            "postgres://tapline:s3cret-pw@127.0.0.1:1/db?sslmode=disable&connect_timeout=5"
                .to_string(),
            "SELECT 'u1' AS identity",
            "cannot connect to database `warehouse` (postgres://tapline:***@127.0.0.1:1/db",
        ),
        (
            database.url.clone(),
            "SELEC 'u1' AS identity",
            "the query on database `warehouse` is not valid: ERROR: syntax error at or near \"SELEC\" (at character 1)",
        ),
        (
            database.url.replacen(
                "postgres://postgres@",
                "postgres://tapline_no_rights:s3cret-pw@",
                1,
            ),
            "SELECT identity FROM $schema.secret",
            "permission denied for schema",
        ),
        (
            database.url.clone(),
            // Fails after a few thousand rows were streamed.
            "SELECT 'u' || i AS identity, 1 / (i - 5000) AS n FROM generate_series(1, 10000) i",
            "ERROR: division by zero",
        ),
    ];
    for (url, query, expected) in cases {
        let (account, _) = sandbox.sandbox.credentials();
        workspace.write(
            "connections.yaml",
            format!(
                "ct:\n  account_id: {account}\n  passcode_file: passcode.txt\n  endpoint: {}\nwarehouse:\n  postgres: ${{WAREHOUSE_URL}}\n",
                sandbox.sandbox.base_url()
            ),
        );
        let query = query.replace("$schema", &database.schema);
        workspace.write(
            "pipeline.yaml",
            format!("connection: ct\nsource:\n  database: warehouse\n  query: {query:?}\ntarget: {{entity: user_profiles}}\n"),
        );
        let output = tapline_with_env(
            workspace.dir.path(),
            &["run", "pipeline.yaml"],
            &[("WAREHOUSE_URL", &url)],
        );
        let text = format!("{}{}", stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(text.contains("pipeline: failed"), "{text}");
        assert!(text.contains(expected), "expected `{expected}` in:\n{text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
        // History has it too, masked.
        let history = tapline(workspace.dir.path(), &["history", "--json"]);
        assert!(!stdout(&history).contains("s3cret-pw"));
    }
    assert_eq!(sandbox.inspect().requests, 0, "nothing was sent");
}

#[test]
fn validate_describes_the_query_and_names_columns_it_cannot_send() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute("CREATE TABLE $schema.places (user_id text, spot point, spent interval);");
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT user_id, spot AS "Spot", spent FROM $schema.places"#,
        "target: {entity: user_profiles}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "pipeline.yaml"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("returns column `Spot` of type `point`, which tapline cannot send"),
        "{text}"
    );
    assert!(text.contains("column `spent` of type `interval`"), "{text}");

    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT user_id, 1 AS "Score" FROM $schema.places"#,
        "target: {entity: user_profiles}\n",
    );
    let text = stderr(&tapline(
        workspace.dir.path(),
        &["validate", "pipeline.yaml"],
    ));
    assert!(
        text.contains("source the query on `warehouse` has no identity column"),
        "{text}"
    );

    // A database that cannot be reached: validate says it could not check, and passes.
    workspace.write(
        "connections.yaml",
        database.connections(&sandbox).replace(
            &database.url,
            "postgres://nobody@127.0.0.1:1/db?connect_timeout=3",
        ),
    );
    let output = tapline(workspace.dir.path(), &["validate", "pipeline.yaml"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("warning: the query's columns could not be checked: cannot connect to database `warehouse`"), "{text}");
}

#[test]
fn the_daemon_runs_a_query_on_its_schedule() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.users AS SELECT 'u' || i AS identity FROM generate_series(1, 5) i;",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        "SELECT identity FROM $schema.users",
        "target: {entity: user_profiles}\nschedule: {cron: \"* * * * * *\"}\n",
    );
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(["daemon", "--dir", "."])
        .current_dir(workspace.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(60, "the five profiles", || {
        sandbox.inspect().distinct_profiles == 5
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}

#[test]
fn a_terminal_shows_that_the_query_is_being_read() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // The server takes a second to answer: the run outlasts a few redraws while it reads.
    database.pipeline(
        &workspace,
        &sandbox,
        "SELECT 'u1' AS identity FROM pg_sleep(1)",
        "target: {entity: user_profiles}\n",
    );
    let drawn = on_a_terminal(workspace.dir.path(), "run pipeline.yaml");
    assert!(
        drawn.contains("reading the query's rows from `warehouse`"),
        "{drawn}"
    );
    assert_eq!(sandbox.inspect().profiles, 1);
}

#[test]
fn every_value_is_sent_exactly_or_its_row_refused_naming_the_column() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $schema.users (n int, big numeric, doc jsonb, grid text[], seen timestamptz, ratio float8);
         INSERT INTO $schema.users VALUES
           (1, 123456789012345678901234, '[\"a\"]', ARRAY['x','y'], '2024-05-01 10:00:00+00', 0.5),
           (2, 1, '[123456789012345678901234]', NULL, NULL, NULL),
           (3, 1, NULL, ARRAY[['a','b'],['c','d']], NULL, NULL),
           (4, 1, NULL, NULL, 'infinity', NULL),
           (5, 'NaN', NULL, NULL, NULL, NULL),
           (6, 2.50, NULL, NULL, NULL, 'NaN');",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT 'u' || n AS identity, big AS "Big", doc AS "Doc", grid AS "Grid", seen AS "Seen", ratio AS "Ratio" FROM $schema.users ORDER BY n"#,
        "target: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (_, summary) = run(&workspace, &[]);
    assert_counts_add_up(&summary);
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(
        profiles["u1"],
        json!({"Big": "123456789012345678901234", "Doc": ["a"], "Grid": ["x", "y"], "Seen": "$D_1714557600", "Ratio": 0.5})
    );
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    let rejected = rejects(workspace.dir.path(), &summary);
    let reason = |line: u64| {
        rejected
            .iter()
            .find(|entry| entry["line"] == line)
            .map(|entry| entry["reason"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(
        reason(2)
            .contains("column `Doc`: the `jsonb` value holds the number 123456789012345678901234"),
        "{}",
        reason(2)
    );
    assert!(
        reason(3).contains("column `Grid`: a `text[]` of 2 dimensions"),
        "{}",
        reason(3)
    );
    assert!(
        reason(4).contains("column `Seen`: the date is `infinity`"),
        "{}",
        reason(4)
    );
    assert!(
        reason(5).contains("column `Big`: the `numeric` value is NaN"),
        "{}",
        reason(5)
    );
    assert!(
        reason(6).contains("column `Ratio`: the `float` value NaN"),
        "{}",
        reason(6)
    );

    // An event whose `ts` is infinity is refused, not sent without one.
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT 'u1' AS identity, 'Viewed' AS "evtName", 'infinity'::timestamptz AS ts"#,
        "target: {entity: user_events}\nskip_invalid_records: true\n",
    );
    let (_, summary) = run(&workspace, &[]);
    assert_eq!(summary["records"]["skipped"], 1, "{summary}");
    assert_eq!(sandbox.inspect().events, 0);

    // A column named twice: the run fails, and validate says so first.
    database.pipeline(
        &workspace,
        &sandbox,
        "SELECT 'd1' AS identity, 'd2' AS identity",
        "target: {entity: user_profiles}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "pipeline.yaml"]);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("returns the column `identity` more than once"),
        "{}",
        stderr(&output)
    );
    let (code, summary) = run(&workspace, &[]);
    assert_ne!(code, Some(0), "{summary}");
    assert!(sandbox.sandbox.profile("d2").is_none());
}

#[test]
fn a_value_too_long_to_send_is_measured_by_the_database_and_never_read() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    // Text, JSON and arrays of any length; the query ordered, ended by `;` and a comment.
    database.execute(
        "CREATE TABLE $schema.users (n int, name text, doc jsonb, tags text[]);
         INSERT INTO $schema.users VALUES
           (1, 'Ann', '[\"a\"]', ARRAY['x']),
           (2, repeat('x', 3 * 1024 * 1024), NULL, NULL),
           (3, 'Cy', jsonb_build_array(repeat('y', 2 * 1024 * 1024)), NULL),
           (4, 'Di', NULL, array_fill('tag'::text, ARRAY[400000])),
           (5, 'Ed', NULL, NULL);",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        r#"SELECT 'u' || n AS identity, name AS "Name", doc AS "Doc", tags AS "Tags" FROM $schema.users ORDER BY n DESC; -- newest first"#,
        "target: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run(&workspace, &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
    assert_eq!(summary["records"]["skipped"], 3, "{summary}");
    // Sent in the query's order.
    let sent: Vec<Value> = sandbox
        .sandbox
        .records("profile")
        .iter()
        .map(|record| record["identity"].clone())
        .collect();
    assert_eq!(sent, [json!("u5"), json!("u1")]);
    assert_eq!(
        profiles_by_identity(&sandbox)["u1"],
        json!({"Name": "Ann", "Doc": ["a"], "Tags": ["x"]})
    );
    let rejected = rejects(workspace.dir.path(), &summary);
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|entry| entry["reason"].as_str().unwrap())
        .collect();
    for (column, bytes) in [
        ("Tags", None),
        ("Doc", None),
        ("Name", Some(3 * 1024 * 1024)),
    ] {
        let found = reasons
            .iter()
            .find(|reason| reason.contains(&format!("column `{column}`")));
        let reason = found.unwrap_or_else(|| panic!("no reason for `{column}`: {reasons:?}"));
        assert!(
            reason.contains("longer than the 1048576 bytes tapline sends")
                && reason.contains("measured as text by the database, which did not send it"),
            "{reason}"
        );
        if let Some(bytes) = bytes {
            assert!(
                reason.contains(&format!("a value of {bytes} bytes")),
                "{reason}"
            );
        }
    }
}
