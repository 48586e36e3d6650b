//! Sources in object storage against a real S3 API server on loopback: every file format
//! read from a bucket as from a local file, deliveries keyed by the object's ETag, a killed
//! run resumed, `file_arrival` on a bucket prefix, and errors that name the bucket and key.
//!
//! They need an S3 server: `TAPLINE_TEST_S3` is its endpoint (any S3 API that takes the
//! keys `test`/`test` and unsigned bucket creation, such as moto); without it each test
//! starts `moto_server` (PyPI `moto[server]`) on a free port. Without either they are
//! skipped with a message, except under `.ci/run`, which installs moto and sets
//! `TAPLINE_TEST_S3_REQUIRED`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use object_store::ObjectStoreExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

use crate::common::{
    TestSandbox, Workspace, kill_run_with_env_when, profile_csv, profiles_by_identity, texts,
    wait_until, write_parquet,
};
use crate::daemon::{Daemon, history};

/// The secret key the tests sign with: it must never appear in anything tapline prints.
const SECRET: &str = "tapline-test-secret-key";

/// An S3 API server for one test, stopped at its end.
struct TestS3 {
    server: Option<Child>,
    endpoint: String,
    runtime: tokio::runtime::Runtime,
    /// A `HOME` without `~/.aws`, so no profile on this machine is read.
    home: tempfile::TempDir,
}

impl TestS3 {
    fn start() -> Option<TestS3> {
        TestS3::start_with(&[])
    }

    /// A server started with these variables (moto's own settings); `None` also when
    /// `TAPLINE_TEST_S3` names a server of its own, which these settings cannot change.
    fn start_moto_with(env: &[(&str, &str)]) -> Option<TestS3> {
        if std::env::var_os("TAPLINE_TEST_S3").is_some() {
            eprintln!(
                "skipped: needs moto's own settings, and TAPLINE_TEST_S3 names another server"
            );
            return None;
        }
        TestS3::start_with(env)
    }

    fn start_with(env: &[(&str, &str)]) -> Option<TestS3> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let home = tempfile::tempdir().unwrap();
        if let Ok(endpoint) = std::env::var("TAPLINE_TEST_S3") {
            return Some(TestS3 {
                server: None,
                endpoint,
                runtime,
                home,
            });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap();
        let started = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let server = match started {
            Ok(server) => server,
            Err(error) if std::env::var_os("TAPLINE_TEST_S3_REQUIRED").is_none() => {
                eprintln!(
                    "skipped: no S3 server ({error} starting moto_server); `pip install 'moto[server]'`, or set TAPLINE_TEST_S3 to an endpoint"
                );
                return None;
            }
            Err(error) => panic!("an S3 server is required here: moto_server: {error}"),
        };
        let address = format!("127.0.0.1:{port}");
        wait_until(120, "moto_server to listen", || {
            TcpStream::connect(&address).is_ok()
        });
        Some(TestS3 {
            server: Some(server),
            endpoint: format!("http://{address}"),
            runtime,
            home,
        })
    }

    /// The environment a run reads its credentials and endpoint from.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("HOME", self.home.path().display().to_string()),
        ]
    }

    /// A new bucket with a name of its own.
    fn bucket(&self) -> String {
        let name = format!("tapline-{:012x}", rand::random::<u64>() >> 16);
        let host = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(host).unwrap();
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        name
    }

    fn client(&self, bucket: &str) -> AmazonS3 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key(SECRET)
            .build()
            .unwrap()
    }

    /// Writes an object (replacing one at the same key).
    fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) {
        let client = self.client(bucket);
        let bytes: Vec<u8> = bytes.into();
        self.runtime
            .block_on(client.put(&object_store::path::Path::parse(key).unwrap(), bytes.into()))
            .unwrap();
    }

    /// Runs `tapline ARGS` in the workspace with the S3 environment.
    fn tapline(&self, workspace: &Workspace, args: &[&str]) -> crate::common::Ran {
        crate::common::Tapline::new(workspace.dir.path())
            .args(args.iter().copied())
            .envs(self.env())
            .run()
    }

    /// `tapline run ARGS --json`: the exit code and the summary.
    fn run_json(&self, workspace: &Workspace, args: &[&str]) -> (Option<i32>, Value) {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.push("--json");
        let ran = self.tapline(workspace, &all);
        (ran.output.status.code(), ran.summary())
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn every_format_in_a_bucket_is_sent_as_a_local_file_is_and_a_replaced_object_is_new() {
    let Some(s3) = TestS3::start() else {
        return;
    };
    let bucket = s3.bucket();
    s3.put(&bucket, "in/users.csv.gz", gzip(&profile_csv(3)));
    // A name as exports write them: spaces, `#`, `%` and brackets, asked for as written.
    s3.put(
        &bucket,
        "in/Daily Export #1 [100%].csv",
        "identity,Plan\nd1,gold\n",
    );
    s3.put(
        &bucket,
        "in/users.jsonl",
        "{\"identity\":\"j1\",\"Plan\":\"gold\",\"Tags\":[\"a\",\"b\"]}\n{\"identity\":\"j2\",\"Plan\":\"silver\"}\n",
    );
    let parquet = Workspace::new();
    write_parquet(
        &parquet.path("users.parquet"),
        "message users { required binary identity (UTF8); required binary City (UTF8); required binary Unused (UTF8); }",
        &[
            texts(&["p1", "p2"]),
            texts(&["Pune", "Oslo"]),
            texts(&["x", "y"]),
        ],
    );
    s3.put(
        &bucket,
        "in/users.parquet",
        std::fs::read(parquet.path("users.parquet")).unwrap(),
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    for (name, key, extra) in [
        ("csv", "in/users.csv.gz", ""),
        ("jsonl", "in/users.jsonl", ""),
        ("daily", "in/Daily Export #1 [100%].csv", ""),
        (
            "parquet",
            "in/users.parquet",
            "output: {export_all_columns: false, columns: [{source: identity, name: identity}, {source: City, name: City}]}\n",
        ),
    ] {
        workspace.pipeline(
            name,
            &sandbox,
            &format!("source: {{path: \"s3://{bucket}/{key}\"}}\ntarget: {{entity: user_profiles}}\n{extra}"),
        );
        let validated = s3.tapline(&workspace, &["validate", &format!("{name}.yaml")]);
        assert!(validated.output.status.success(), "{}", validated.stderr());
        let (code, summary) = s3.run_json(&workspace, &[&format!("{name}.yaml")]);
        assert_eq!(code, Some(0), "{summary}");
        assert_eq!(summary["status"], "succeeded", "{summary}");
    }
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(profiles.len(), 8, "{profiles:?}");
    assert_eq!(profiles["d1"]["Plan"], "gold");
    assert_eq!(profiles["user-2"]["Email"], "user2@example.com");
    assert_eq!(profiles["j1"]["Tags"], serde_json::json!(["a", "b"]));
    assert_eq!(profiles["p2"], serde_json::json!({"City": "Oslo"}));

    // Sent already: the same version of the object is up to date.
    let (code, summary) = s3.run_json(&workspace, &["csv.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary["up_to_date"].is_string(), "{summary}");
    // Replaced under the same key: a new file, sent.
    s3.put(
        &bucket,
        "in/users.csv.gz",
        gzip("identity,Name\nnew-1,New\n"),
    );
    let (code, summary) = s3.run_json(&workspace, &["csv.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 1, "{summary}");
    assert!(profiles_by_identity(&sandbox).contains_key("new-1"));
}

#[test]
fn a_parquet_object_is_read_by_ranges_and_a_projection_leaves_other_columns_unread() {
    const ROWS: usize = 2_000;
    let Some(s3) = TestS3::start() else {
        return;
    };
    let bucket = s3.bucket();
    let local = Workspace::new();
    let column = |value: &dyn Fn(usize) -> String| {
        crate::common::ParquetColumn::Text((0..ROWS).map(|i| value(i).into_bytes()).collect())
    };
    write_parquet(
        &local.path("users.parquet"),
        "message users { required binary identity (UTF8); required binary City (UTF8); required binary Notes (UTF8); }",
        &[
            column(&|i| format!("p{i}")),
            column(&|i| format!("City {}", i % 7)),
            // A wide column the mapping does not send: 3 KB of text a row, 6 MB in all.
            column(&|i| format!("{i:04}").repeat(750)),
        ],
    );
    let size = std::fs::metadata(local.path("users.parquet"))
        .unwrap()
        .len();
    s3.put(
        &bucket,
        "wide/users.parquet",
        std::fs::read(local.path("users.parquet")).unwrap(),
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.pipeline(
        "wide",
        &sandbox,
        &format!(
            "source: {{path: \"s3://{bucket}/wide/users.parquet\"}}\ntarget: {{entity: user_profiles}}\noutput: {{export_all_columns: false, columns: [{{source: identity, name: identity}}, {{source: City, name: City}}]}}\n"
        ),
    );
    // The ranges tapline asks for are in its debug log.
    let log = crate::common::Tapline::new(workspace.dir.path())
        .args(["run", "wide.yaml", "--json"])
        .envs(s3.env())
        .env("TAPLINE_LOG", "tapline=debug")
        .run()
        .code(0)
        .stderr();
    let profiles = profiles_by_identity(&sandbox);
    assert_eq!(profiles.len(), ROWS);
    assert_eq!(profiles["p5"], serde_json::json!({"City": "City 5"}));
    // Only the footer and the two small columns were fetched.
    let fetched: u64 = log
        .lines()
        .filter(|line| line.contains("reading a range"))
        .map(|line| {
            let field = |name: &str| {
                line.split(&format!("{name}="))
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|digits| digits.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("{name} in {line}"))
            };
            field("end") - field("start")
        })
        .sum();
    assert!(fetched > 0, "{log}");
    assert!(
        fetched * 2 < size,
        "read {fetched} bytes of a {size}-byte object\n{log}"
    );
}

#[test]
fn a_custom_list_and_send_changes_read_from_a_bucket_as_from_a_file() {
    let Some(s3) = TestS3::start() else {
        return;
    };
    let bucket = s3.bucket();
    s3.put(
        &bucket,
        "lists/vip.csv.gz",
        gzip("identity,type\nu1,i\nu2,i\nguid-3,g\n"),
    );
    s3.put(
        &bucket,
        "profiles.csv",
        "identity,Plan\nu1,gold\nu2,silver\n",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.pipeline(
        "list",
        &sandbox,
        &format!(
            "source: {{path: \"s3://{bucket}/lists/vip.csv.gz\"}}\ntarget:\n  entity: custom_list\n  custom_list: {{name: VIP users, uploader_email: {}, segment_mode: create}}\n",
            tapline::sandbox::DEFAULT_ADMIN_EMAIL
        ),
    );
    let (code, summary) = s3.run_json(&workspace, &["list.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    let seen = sandbox.inspect();
    assert_eq!(
        seen.segments["VIP users"].lines,
        ["Type,Identity", "i,u1", "i,u2", "g,guid-3"]
    );

    workspace.pipeline(
        "changes",
        &sandbox,
        &format!(
            "source: {{path: \"s3://{bucket}/profiles.csv\"}}\ntarget: {{entity: user_profiles}}\nsend: changes\n"
        ),
    );
    let (code, summary) = s3.run_json(&workspace, &["changes.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
    // The export is written again with one profile changed and one new: only those go.
    s3.put(
        &bucket,
        "profiles.csv",
        "identity,Plan\nu1,gold\nu2,platinum\nu3,bronze\n",
    );
    let (code, summary) = s3.run_json(&workspace, &["changes.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
    assert_eq!(sandbox.inspect().profiles, 4);
}

#[test]
fn a_run_killed_mid_way_resumes_the_object_and_sends_each_record_once() {
    const ROWS: usize = 20_000;
    let Some(s3) = TestS3::start() else {
        return;
    };
    let bucket = s3.bucket();
    s3.put(&bucket, "exports/users.csv", profile_csv(ROWS));
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: std::time::Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.pipeline(
        "pipeline",
        &sandbox,
        &format!(
            "source: {{path: \"s3://{bucket}/exports/users.csv\"}}\ntarget: {{entity: user_profiles}}\nthread_count: 2\n"
        ),
    );
    let env = s3.env();
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    kill_run_with_env_when(
        &workspace,
        (&["pipeline.yaml"], &env),
        "a third of the rows",
        || sandbox.inspect().profiles >= (ROWS / 3) as u64,
    );
    assert!(sandbox.inspect().distinct_profiles < ROWS);
    let (code, summary) = s3.run_json(&workspace, &["pipeline.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary["rows_resumed"].as_u64() > Some(0), "{summary}");
    assert!(summary["resumed_from"].is_string(), "{summary}");
    let sent_again = summary["records"]["accepted"].as_u64().unwrap();
    assert!(
        sent_again < ROWS as u64,
        "only what the killed run left: {summary}"
    );
    assert_eq!(profiles_by_identity(&sandbox).len(), ROWS);
}

#[test]
fn errors_name_the_bucket_and_key_and_never_a_secret() {
    let Some(s3) = TestS3::start() else {
        return;
    };
    let bucket = s3.bucket();
    s3.put(&bucket, "in/users.csv", profile_csv(2));
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    // Runs a pipeline reading `path` with these variables: why it stopped.
    let run = |path: &str, env: Vec<(&'static str, String)>| {
        workspace.pipeline(
            "p",
            &sandbox,
            &format!("source: {{path: \"{path}\"}}\ntarget: {{entity: user_profiles}}\n"),
        );
        let ran = crate::common::Tapline::new(workspace.dir.path())
            .args(["run", "p.yaml", "--json"])
            .envs(env)
            .run();
        let printed = format!("{}{}", ran.stdout(), ran.stderr());
        assert!(!printed.contains(SECRET), "{printed}");
        assert_eq!(ran.output.status.code(), Some(1), "{printed}");
        ran.summary()["stop_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let env = s3.env();
    let with = |changes: &[(&'static str, &str)]| {
        let mut all: Vec<(&str, String)> = env
            .iter()
            .filter(|(name, _)| !changes.iter().any(|(changed, _)| changed == name))
            .cloned()
            .collect();
        all.extend(
            changes
                .iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (*name, value.to_string())),
        );
        all
    };
    let reason = run(&format!("s3://{bucket}-gone/in/users.csv"), with(&[]));
    assert!(
        reason.contains(&format!("no bucket `{bucket}-gone`")),
        "{reason}"
    );
    let reason = run(&format!("s3://{bucket}/in/missing.csv"), with(&[]));
    assert!(
        reason.contains(&format!("no object `in/missing.csv` in bucket `{bucket}`")),
        "{reason}"
    );
    // No keys anywhere: the instance metadata service (here a closed port) is asked last.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let reason = run(
        &format!("s3://{bucket}/in/users.csv"),
        with(&[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_METADATA_ENDPOINT", &format!("http://{closed}")),
        ]),
    );
    assert!(reason.contains("no credentials found"), "{reason}");
    assert!(reason.contains("AWS_PROFILE"), "{reason}");
    // A profile's static keys, with no key in the environment: read from ~/.aws.
    std::fs::create_dir_all(s3.home.path().join(".aws")).unwrap();
    std::fs::write(
        s3.home.path().join(".aws/credentials"),
        format!("[crm]\naws_access_key_id = test\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    workspace.pipeline(
        "p",
        &sandbox,
        &format!(
            "source: {{path: \"s3://{bucket}/in/users.csv\"}}\ntarget: {{entity: user_profiles}}\n"
        ),
    );
    let env = with(&[
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_PROFILE", "crm"),
    ]);
    let summary = crate::common::Tapline::new(workspace.dir.path())
        .args(["run", "p.yaml", "--json"])
        .envs(env)
        .run()
        .code(0)
        .summary();
    assert_eq!(summary["records"]["accepted"], 2, "{summary}");
    let sent = sandbox.inspect().profiles;
    // A profile that needs the AWS CLI.
    std::fs::create_dir_all(s3.home.path().join(".aws")).unwrap();
    std::fs::write(
        s3.home.path().join(".aws/config"),
        "[profile corp]\nsso_session = corp\n",
    )
    .unwrap();
    let reason = run(
        &format!("s3://{bucket}/in/users.csv"),
        with(&[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_PROFILE", "corp"),
        ]),
    );
    assert!(reason.contains("profile `corp`"), "{reason}");
    assert!(reason.contains("export-credentials"), "{reason}");
    // Plain HTTP to another machine is refused before anything is sent.
    let reason = run(
        &format!("s3://{bucket}/in/users.csv"),
        with(&[("AWS_ENDPOINT_URL", "http://s3.internal.example:9000")]),
    );
    assert!(reason.contains("AWS_ALLOW_HTTP=true"), "{reason}");
    assert_eq!(
        sandbox.inspect().profiles,
        sent,
        "nothing sent by the refused runs"
    );

    // Stores tapline does not read yet are named by `validate`.
    workspace.pipeline(
        "gcs",
        &sandbox,
        "source: {path: \"gs://drops/users.csv\"}\ntarget: {entity: user_profiles}\n",
    );
    let validated = s3.tapline(&workspace, &["validate", "gcs.yaml"]);
    assert_eq!(validated.output.status.code(), Some(2));
    assert!(
        validated
            .stderr()
            .contains("not yet from Google Cloud Storage"),
        "{}",
        validated.stderr()
    );
}

#[test]
fn access_denied_names_the_object_the_credentials_and_the_permission_it_needs() {
    // moto checks signatures after its first action (making the bucket): the keys the
    // run signs with are unknown to it, as to S3 a key without the right policy.
    let Some(s3) = TestS3::start_moto_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]) else {
        return;
    };
    let bucket = s3.bucket();
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.pipeline(
        "p",
        &sandbox,
        &format!(
            "source: {{path: \"s3://{bucket}/in/users.csv\"}}\ntarget: {{entity: user_profiles}}\n"
        ),
    );
    let (code, summary) = s3.run_json(&workspace, &["p.yaml"]);
    assert_eq!(code, Some(1), "{summary}");
    let reason = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "access denied to `s3://{bucket}/in/users.csv` for the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: it needs s3:GetObject"
        )),
        "{reason}"
    );
    assert!(!summary.to_string().contains(SECRET), "{summary}");
}

#[test]
fn the_daemon_sends_each_new_object_under_a_prefix_once_oldest_first() {
    let Some(s3) = TestS3::start() else {
        return;
    };
    let bucket = s3.bucket();
    // One object was there before the daemon started; one elsewhere does not match.
    s3.put(&bucket, "in/vip_1.csv", "identity,Name\nu1,One\n");
    s3.put(&bucket, "in/other.csv", "identity,Name\nx,X\n");
    s3.put(&bucket, "in/deeper/vip_9.csv", "identity,Name\ny,Y\n");
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.pipeline(
        "vip",
        &sandbox,
        &format!(
            "source: {{path: \"s3://{bucket}/in/vip_*.csv\", poll_seconds: 1}}\ntarget: {{entity: user_profiles}}\ntrigger: file_arrival\n"
        ),
    );
    let validated = s3.tapline(&workspace, &["validate", "vip.yaml"]);
    assert!(validated.output.status.success(), "{}", validated.stderr());
    let env = s3.env();
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let mut daemon = Daemon::start_with_env(dir, &[], &env);
    daemon.notification_with("READY=1");
    daemon.wait_for(60, "the object that was there", || {
        sandbox.inspect().profiles == 1
    });
    s3.put(&bucket, "in/vip_2.csv", "identity,Name\nu2,Two\nu3,Three\n");
    s3.put(&bucket, "in/vip_3.csv", "identity,Name\nu4,Four\n");
    daemon.wait_for(60, "both new objects", || sandbox.inspect().profiles == 4);
    // The same key written again is a new object.
    s3.put(&bucket, "in/vip_1.csv", "identity,Name\nu5,Five\n");
    daemon.wait_for(60, "the replaced object", || {
        sandbox.inspect().profiles == 5
    });
    daemon.wait_for(60, "every run to end", || {
        let runs = history(dir);
        runs.len() == 4 && runs.iter().all(|run| run["status"] == "succeeded")
    });
    assert_eq!(daemon.stop(), Some(0));
    assert!(sandbox.sandbox.profile("x").is_none());
    assert!(sandbox.sandbox.profile("y").is_none());
    // Oldest first: the order the sandbox received them in.
    let received: Vec<Value> = sandbox
        .sandbox
        .records("profile")
        .iter()
        .map(|record| record["identity"].clone())
        .collect();
    assert_eq!(received, ["u1", "u2", "u3", "u4", "u5"]);
    let runs = history(dir);
    assert!(runs.iter().all(|run| run["trigger"] == "file_arrival"));
    // A restarted daemon sends nothing again.
    let mut daemon = Daemon::start_with_env(dir, &[], &env);
    daemon.notification_with("READY=1");
    s3.put(&bucket, "in/vip_4.csv", "identity,Name\nu6,Six\n");
    daemon.wait_for(60, "the object after the restart", || {
        let runs = history(dir);
        runs.len() == 5 && runs.iter().all(|run| run["status"] != "running")
    });
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(sandbox.inspect().profiles, 6);

    // `tapline run` goes over every matching object: each is delivered already.
    let ran = s3
        .tapline(&workspace, &["run", "vip.yaml", "--json"])
        .code(0);
    let lines: Vec<Value> = ran
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines.iter().all(|line| line["up_to_date"].is_string()),
        "{lines:?}"
    );
}

#[test]
fn two_daemons_on_the_shared_store_send_each_object_once() {
    let Some(s3) = TestS3::start() else {
        return;
    };
    let Some(database) = crate::common::TestDatabase::open() else {
        return;
    };
    let bucket = s3.bucket();
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let state = database.state_url();
    workspace.pipeline(
        "vip",
        &sandbox,
        &format!(
            "source: {{path: \"s3://{bucket}/exports/vip_*.csv\", poll_seconds: 1}}\ntarget: {{entity: user_profiles}}\ntrigger: file_arrival\n"
        ),
    );
    let daemons: Vec<Child> = (0..2)
        .map(|index| {
            Command::new(env!("CARGO_BIN_EXE_tapline"))
                .args([
                    "daemon",
                    "--dir",
                    ".",
                    "--lease-seconds",
                    "2",
                    "--state",
                    &state,
                ])
                .envs(s3.env())
                .env("TAPLINE_LOG", "info")
                .current_dir(workspace.dir.path())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(workspace.path(&format!("daemon{index}.log"))).unwrap(),
                )
                .spawn()
                .expect("the daemon starts")
        })
        .collect();
    let logs = || {
        (0..2)
            .map(|index| {
                std::fs::read_to_string(workspace.path(&format!("daemon{index}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    crate::common::wait_until_or_show(
        60,
        "both daemons to start",
        || logs().matches("daemon started").count() == 2,
        logs,
    );
    // Both daemons list the prefix every second: each object is claimed by one.
    for index in 0..4 {
        let csv = profile_csv(100).replace("user-", &format!("f{index}-"));
        s3.put(&bucket, &format!("exports/vip_{index}.csv"), csv);
    }
    let shared_history = || {
        let ran = crate::common::Tapline::new(workspace.dir.path())
            .args(["history", "--json", "--limit", "100", "--state", &state])
            .run()
            .code(0);
        serde_json::from_str::<Value>(&ran.stdout())
            .ok()
            .and_then(|runs| runs.as_array().cloned())
            .unwrap_or_default()
    };
    crate::common::wait_until_or_show(
        120,
        "every object",
        || {
            let runs = shared_history();
            runs.len() >= 4 && runs.iter().all(|run| run["status"] == "succeeded")
        },
        logs,
    );
    for mut daemon in daemons {
        let _ = Command::new("kill")
            .args(["-15", &daemon.id().to_string()])
            .status();
        daemon.wait().expect("it stops");
    }
    assert_eq!(shared_history().len(), 4, "one run per object\n{}", logs());
    let seen = sandbox.inspect();
    assert_eq!(seen.distinct_profiles, 400);
    assert_eq!(seen.profiles, 400, "no object was sent twice\n{}", logs());
}
