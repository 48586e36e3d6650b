//! Query sources against a real MariaDB (or MySQL) server: types as CleverTap wants them,
//! incremental watermarks bound to every `?`, errors that name the database and never its
//! password, TLS modes, and `validate` naming columns it cannot send.
//!
//! They need a server: `TAPLINE_TEST_MYSQL` is its URL (default
//! `mysql://root@127.0.0.1:3306/test`, MariaDB's root without a password). Without one they
//! are skipped with a message, except under `.ci/run`, which starts the server and sets
//! `TAPLINE_TEST_MYSQL_REQUIRED`.

use mysql_async::prelude::Queryable;
use serde_json::json;
use tapline::sandbox::SandboxConfig;

use crate::common::{
    TestSandbox, Workspace, kill_run_when, profiles_by_identity, run_json, stderr, tapline,
};

const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// A database of its own on the test server, dropped at the end.
struct TestMysql {
    runtime: tokio::runtime::Runtime,
    conn: std::cell::RefCell<Option<mysql_async::Conn>>,
    /// The server's URL.
    server: String,
    /// The test's database.
    name: String,
}

impl TestMysql {
    fn open() -> Option<TestMysql> {
        let server = std::env::var("TAPLINE_TEST_MYSQL").unwrap_or_else(|_| DEFAULT_URL.into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connected = runtime.block_on(async {
            let opts = mysql_async::Opts::from_url(&server).expect("a MySQL URL");
            mysql_async::Conn::new(opts).await
        });
        let conn = match connected {
            Ok(conn) => conn,
            Err(error) if std::env::var_os("TAPLINE_TEST_MYSQL_REQUIRED").is_none() => {
                eprintln!(
                    "skipped: no MySQL or MariaDB at {server} ({error}); start one (root without a password), or set TAPLINE_TEST_MYSQL"
                );
                return None;
            }
            Err(error) => panic!("MySQL at {server} is required here: {error}"),
        };
        let database = TestMysql {
            runtime,
            conn: std::cell::RefCell::new(Some(conn)),
            name: format!("tl{:016x}", rand::random::<u64>()),
            server,
        };
        database.execute(&format!("CREATE DATABASE {}", database.name));
        Some(database)
    }

    /// Runs statements, `$db` naming the test's database.
    fn execute(&self, sql: &str) {
        let sql = sql.replace("$db", &self.name);
        let mut conn = self.conn.borrow_mut();
        let conn = conn.as_mut().expect("connected");
        self.runtime
            .block_on(conn.query_drop(&sql))
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    /// The test database's URL, as a pipeline names it.
    fn url(&self) -> String {
        let base = self
            .server
            .rsplit_once('/')
            .map_or(self.server.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }

    /// Writes `connections.yaml` (the sandbox's account as `ct`, this database as `app`) and
    /// `pipeline.yaml` reading `query`, with `rest` after it.
    fn pipeline(&self, workspace: &Workspace, sandbox: &TestSandbox, query: &str, rest: &str) {
        let (account, _) = sandbox.sandbox.credentials();
        workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
        workspace.write(
            "connections.yaml",
            format!(
                "ct:\n  account_id: {account}\n  passcode_file: passcode.txt\n  endpoint: {}\napp:\n  mysql: \"{}\"\n",
                sandbox.sandbox.base_url(),
                self.url()
            ),
        );
        workspace.write(
            "pipeline.yaml",
            format!(
                "connection: ct\nsource:\n  database: app\n  query: |\n    {}\n{rest}",
                query.replace('\n', "\n    ")
            ),
        );
    }
}

impl Drop for TestMysql {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {}", self.name);
        if let Some(mut conn) = self.conn.get_mut().take() {
            let _ = self.runtime.block_on(async move {
                let _ = conn.query_drop(sql).await;
                conn.disconnect().await
            });
        }
    }
}

#[test]
fn every_mysql_type_becomes_the_json_clevertap_wants() {
    let Some(database) = TestMysql::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $db.users (id BIGINT PRIMARY KEY, email VARCHAR(100), vip TINYINT(1),
           small SMALLINT, score DECIMAL(10,2), big DECIMAL(30,10), ratio DOUBLE, born DATE,
           seen DATETIME, changed TIMESTAMP NULL, tags JSON, plan ENUM('free','pro'), note TEXT,
           huge BIGINT UNSIGNED);
         INSERT INTO $db.users VALUES
           (1, 'a@example.com', 1, 7, 12.50, 12345678901234567890.1234567891, 0.25, '1990-05-01',
            '2024-05-01 10:00:00', '2024-05-01 08:00:00', '[\"golf\",\"chess\"]', 'pro', 'hé', 18446744073709551615),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        "SELECT CONCAT('u', id) AS identity, email AS Email, vip AS VIP, small AS Small,
       score AS Score, big AS Big, ratio AS Ratio, born AS DOB, seen AS Seen,
       changed AS Changed, tags AS Tags, plan AS Plan, note AS Note, huge AS Huge
FROM $db.users ORDER BY id"
            .replace("$db", &database.name)
            .as_str(),
        "  timezone: Asia/Kolkata\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(
        profiles["u1"],
        json!({
            "Email": "a@example.com", "VIP": true, "Small": 7, "Score": 12.5,
            // More digits than a JSON number carries: its exact text.
            "Big": "12345678901234567890.1234567891",
            "Ratio": 0.25,
            // Midnight and 10:00 in Kolkata (the source's zone); a TIMESTAMP is a point in
            // time (08:00 UTC, written in the server's UTC session).
            "DOB": "$D_641500200", "Seen": "$D_1714537800", "Changed": "$D_1714550400",
            "Tags": ["golf", "chess"], "Plan": "pro", "Note": "hé",
            // A 64-bit integer (unsigned too) is a JSON number CleverTap reads exactly.
            "Huge": 18446744073709551615u64
        })
    );
    // NULLs are left out.
    assert_eq!(profiles["u2"], json!({}));
}

#[test]
fn an_incremental_mysql_query_binds_the_watermark_to_every_placeholder() {
    let Some(database) = TestMysql::open() else {
        return;
    };
    database.execute(
        "CREATE TABLE $db.users (identity VARCHAR(20), email VARCHAR(100), updated_at DATETIME(6));
         INSERT INTO $db.users VALUES ('u1', 'u1@example.com', '2026-01-01 00:00:01'),
           ('u2', 'u2@example.com', '2026-01-01 00:00:02'), ('u3', 'u3@example.com', '2026-01-01 00:00:03');",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        &format!(
            "SELECT identity, email AS Email, updated_at FROM {}.users\nWHERE ? IS NULL OR updated_at > ? ORDER BY updated_at",
            database.name
        ),
        "  incremental: {column: updated_at}\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 3, "{summary}");
    // Nothing new: nothing read.
    let (_, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(summary["records"]["read"], 0, "{summary}");
    // One row changes after the watermark (a microsecond later counts).
    database.execute(
        "UPDATE $db.users SET email = 'new@example.com', updated_at = '2026-01-01 00:00:03.000001' WHERE identity = 'u2';",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["read"], 1, "{summary}");
    assert_eq!(
        profiles_by_identity(&sandbox)["u2"]["Email"],
        "new@example.com"
    );
    // `--full` binds NULL: every row again.
    let (_, summary) = run_json(&workspace, &["pipeline.yaml", "--full"]);
    assert_eq!(summary["records"]["read"], 3, "{summary}");
}

#[test]
fn mysql_errors_name_the_database_never_the_password_and_validate_names_what_it_cannot_send() {
    let Some(database) = TestMysql::open() else {
        return;
    };
    database
        .execute("CREATE TABLE $db.places (user_id VARCHAR(20), photo VARBINARY(10), spent TIME);");
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        &format!(
            "SELECT user_id AS identity, photo AS Photo, spent FROM {}.places",
            database.name
        ),
        "target: {entity: user_profiles}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "pipeline.yaml"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("returns column `Photo` of type `varbinary`, which tapline cannot send; cast it in the query (`CAST(Photo AS CHAR)`"),
        "{text}"
    );
    assert!(text.contains("column `spent` of type `time`"), "{text}");

    // A wrong password: the run names the database and the server's answer, never the password.
    let wrong = database
        .url()
        .replace("mysql://root@", "mysql://root:Hunter2-not-it@");
    let connections = std::fs::read_to_string(workspace.path("connections.yaml")).unwrap();
    workspace.write(
        "connections.yaml",
        connections.replace(&database.url(), &wrong),
    );
    workspace.write(
        "pipeline.yaml",
        "connection: ct\nsource:\n  database: app\n  query: SELECT 'u1' AS identity\ntarget: {entity: user_profiles}\n",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_ne!(code, Some(0), "{summary}");
    let text = summary.to_string();
    assert!(text.contains("cannot connect to database `app`"), "{text}");
    assert!(text.contains("Access denied"), "{text}");
    assert!(!text.contains("Hunter2-not-it"), "{text}");

    // TLS asked of a server that offers none: said, not silently skipped.
    workspace.write(
        "connections.yaml",
        connections.replace(
            &database.url(),
            &format!("{}?ssl-mode=REQUIRED", database.url()),
        ),
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    let text = summary.to_string();
    if code == Some(0) {
        // This server offers TLS: REQUIRED was met.
        assert_eq!(summary["records"]["accepted"], 1, "{text}");
    } else {
        assert!(text.contains("the server does not offer TLS"), "{text}");
    }
    // An unknown mode is a validate error at its place.
    workspace.write(
        "connections.yaml",
        connections.replace(
            &database.url(),
            &format!("{}?ssl-mode=SOMETIMES", database.url()),
        ),
    );
    let text = stderr(&tapline(
        workspace.dir.path(),
        &["validate", "pipeline.yaml"],
    ));
    assert!(text.contains("unknown `ssl-mode` `SOMETIMES`"), "{text}");
}

#[test]
fn a_killed_mysql_run_resumes_from_its_snapshot_and_not_from_a_new_query() {
    const ROWS: usize = 20_000;
    let Some(database) = TestMysql::open() else {
        return;
    };
    database.execute(&format!(
        "CREATE TABLE $db.users AS SELECT CONCAT('u', seq) AS identity, CONCAT('plan-', seq % 5) AS plan
         FROM seq_1_to_{ROWS};"
    ));
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: std::time::Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    database.pipeline(
        &workspace,
        &sandbox,
        &format!(
            "SELECT identity, plan AS Plan FROM {}.users ORDER BY identity",
            database.name
        ),
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
        "DELETE FROM $db.users; INSERT INTO $db.users VALUES ('other1', 'x'), ('other2', 'x');",
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary["rows_resumed"].as_u64() > Some(0), "{summary}");
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(profiles.len(), ROWS, "every row the killed run read, once");
    assert!(profiles.keys().all(|identity| identity.starts_with('u')));
    // The next run reads the table as it is now.
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
}

/// The server's certificate when it offers TLS (`.ci/run` gives MariaDB Debian's certificate
/// for `localhost` and names it in `TAPLINE_TEST_MYSQL_TLS_CA`).
fn server_certificate() -> Option<String> {
    let found = std::env::var("TAPLINE_TEST_MYSQL_TLS_CA").ok();
    if found.is_none() {
        assert!(
            std::env::var_os("TAPLINE_TEST_MYSQL_REQUIRED").is_none(),
            "TAPLINE_TEST_MYSQL_TLS_CA must name the server's certificate here"
        );
        eprintln!(
            "skipped: TAPLINE_TEST_MYSQL_TLS_CA is not set (the certificate of a server with TLS on; see .ci/run)"
        );
    }
    found
}

#[test]
fn mysql_tls_modes_encrypt_and_check_the_certificate_as_mysql_clients_do() {
    let Some(database) = TestMysql::open() else {
        return;
    };
    let Some(ca) = server_certificate() else {
        return;
    };
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // The query reports its own connection's cipher: empty when it is not encrypted.
    database.pipeline(
        &workspace,
        &sandbox,
        "SELECT 'u1' AS identity, (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher') AS Cipher",
        "target: {entity: user_profiles}\n",
    );
    let connections = std::fs::read_to_string(workspace.path("connections.yaml")).unwrap();
    let with = |url: String| {
        workspace.write(
            "connections.yaml",
            connections.replace(&database.url(), &url),
        );
        let (code, summary) = run_json(&workspace, &["pipeline.yaml", "--force"]);
        let cipher = profiles_by_identity(&sandbox)
            .get("u1")
            .and_then(|profile| profile["Cipher"].as_str().map(str::to_string));
        (code, summary, cipher)
    };
    let url = database.url();
    let localhost = url.replace("127.0.0.1", "localhost");
    for (mode, shown) in [
        (format!("{url}?ssl-mode=REQUIRED"), "REQUIRED"),
        (url.clone(), "PREFERRED (the default)"),
        (format!("{url}?ssl-mode=VERIFY_CA&ssl-ca={ca}"), "VERIFY_CA"),
        (
            format!("{localhost}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
            "VERIFY_IDENTITY for localhost",
        ),
    ] {
        let (code, summary, cipher) = with(mode);
        assert_eq!(code, Some(0), "{shown}: {summary}");
        assert!(
            cipher.as_deref().is_some_and(|cipher| !cipher.is_empty()),
            "{shown} encrypts: {cipher:?}"
        );
    }
    let (code, summary, cipher) = with(format!("{url}?ssl-mode=DISABLED"));
    assert_eq!(code, Some(0), "{summary}");
    assert!(cipher.as_deref().is_none_or(str::is_empty), "{cipher:?}");

    // The certificate is for `localhost`: VERIFY_IDENTITY to 127.0.0.1 refuses it by name.
    let (code, summary, _) = with(format!("{url}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"));
    assert_ne!(code, Some(0), "{summary}");
    let text = summary.to_string();
    assert!(text.contains("cannot connect to database `app`"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    // A CA that did not sign the server's certificate: VERIFY_CA refuses it.
    let other = workspace.path("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(workspace.path("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (code, summary, _) = with(format!(
        "{url}?ssl-mode=VERIFY_CA&ssl-ca={}",
        other.display()
    ));
    assert_ne!(code, Some(0), "{summary}");
    assert!(
        summary.to_string().to_lowercase().contains("certificate"),
        "{summary}"
    );
}
