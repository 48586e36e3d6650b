//! Shared helpers of the integration tests: a temp folder of pipelines, a sandbox on
//! loopback, and the real `tapline` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tapline::sandbox::{Sandbox, SandboxConfig};

/// A sandbox running on its own tokio runtime while the test thread runs the binary.
/// Dropping it drops the runtime, which ends the server.
pub struct TestSandbox {
    pub sandbox: Sandbox,
    runtime: tokio::runtime::Runtime,
}

impl TestSandbox {
    pub fn start(config: SandboxConfig) -> Self {
        // Tests build their own reqwest clients; reqwest is built without a crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sandbox = runtime
            .block_on(Sandbox::start(
                config,
                "127.0.0.1:0".parse().expect("address"),
            ))
            .expect("sandbox starts");
        TestSandbox { sandbox, runtime }
    }

    /// Runs a future on the sandbox's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn inspect(&self) -> tapline::sandbox::Inspection {
        self.sandbox.inspect()
    }

    /// A connection block pointing at this sandbox with its credentials.
    pub fn connection_yaml(&self) -> String {
        let (account, _) = self.sandbox.credentials();
        format!(
            "connection:\n  account_id: {account}\n  passcode_file: passcode.txt\n  endpoint: {}\n  request_timeout_seconds: 5\n",
            self.sandbox.base_url()
        )
    }
}

/// A temp folder holding pipeline files and their data.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let workspace = Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let passcode = workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
        // Private, as a passcode file should be (tapline warns about one others can read).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(passcode, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the passcode file");
        workspace
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Writes `<name>.yaml` for a sandbox, with `body` after the connection.
    pub fn pipeline(&self, name: &str, sandbox: &TestSandbox, body: &str) -> PathBuf {
        self.write(
            &format!("{name}.yaml"),
            format!("{}{body}", sandbox.connection_yaml()),
        )
    }
}

/// Runs `tapline run <args>` in the workspace and kills it (SIGKILL) once `killed_when`
/// holds: a run that stops mid-way with no chance to tidy up.
pub fn kill_run_when(
    workspace: &Workspace,
    args: &[&str],
    what: &str,
    killed_when: impl FnMut() -> bool,
) {
    kill_run_with_env_when(workspace, (args, &[]), what, killed_when);
}

/// [`kill_run_when`], with these environment variables set for the run.
pub fn kill_run_with_env_when(
    workspace: &Workspace,
    (args, env): (&[&str], &[(&str, &str)]),
    what: &str,
    killed_when: impl FnMut() -> bool,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapline"))
        .arg("run")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tapline starts");
    wait_until(120, what, killed_when);
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// The sandbox's profiles by identity (a number as its text), with their properties.
pub fn profiles_by_identity(sandbox: &TestSandbox) -> std::collections::BTreeMap<String, Value> {
    sandbox
        .sandbox
        .records("profile")
        .into_iter()
        .map(|record| {
            let identity = match &record["identity"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (identity, record["profileData"].clone())
        })
        .collect()
}

/// Runs the real binary in `dir` on a terminal (util-linux `script` gives it one) and
/// returns what it drew there.
pub fn on_a_terminal(dir: &Path, args: &str) -> String {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_tapline"));
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .output()
        .expect("`script` (util-linux) runs a command on a terminal");
    stdout(&output)
}

/// `tapline` with these arguments in a folder, run and checked in one expression, as
/// ripgrep's and just's tests do: `Tapline::new(dir).args(["validate", "p.yaml"]).env(...)
/// .run().code(2).stderr()`.
pub struct Tapline {
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Tapline {
    pub fn new(dir: &Path) -> Self {
        Tapline {
            dir: dir.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn args<'a>(mut self, args: impl IntoIterator<Item = &'a str>) -> Self {
        self.args.extend(args.into_iter().map(str::to_string));
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Several variables at once (an S3 test's credentials and endpoint, say).
    pub fn envs<N: AsRef<str>, V: AsRef<str>>(
        mut self,
        variables: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        self.env.extend(
            variables
                .into_iter()
                .map(|(name, value)| (name.as_ref().to_string(), value.as_ref().to_string())),
        );
        self
    }

    pub fn run(self) -> Ran {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        Ran {
            output: tapline_with_env(&self.dir, &args, &env),
            command: self.args.join(" "),
        }
    }
}

/// What a [`Tapline`] run did.
pub struct Ran {
    pub output: Output,
    command: String,
}

impl Ran {
    /// Asserts the exit code, showing what the command printed when it differs.
    #[track_caller]
    pub fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.output.status.code(),
            Some(expected),
            "`tapline {}`\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.stdout(),
            self.stderr()
        );
        self
    }

    pub fn stdout(&self) -> String {
        stdout(&self.output)
    }

    pub fn stderr(&self) -> String {
        stderr(&self.output)
    }

    /// The one `--json` summary line.
    pub fn summary(&self) -> Value {
        summary(&self.output)
    }
}

/// Settings for `insta` snapshots of what tapline prints: the parts that differ from run to
/// run (run IDs, times, rates, temporary folders) replaced by fixed words.
pub fn stable_output() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "[RUN_ID]");
    settings.add_filter(r"\d+\.\d+ s\b", "[SECONDS] s");
    settings.add_filter(r"\d+ records/s", "[RATE] records/s");
    settings.add_filter(r"/tmp/\.tmp[A-Za-z0-9]+", "[TMP]");
    settings.add_filter(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:[PORT]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// Runs the real binary in `dir`.
pub fn tapline(dir: &Path, args: &[&str]) -> Output {
    tapline_with_env(dir, args, &[])
}

pub fn tapline_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tapline"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("TAPLINE_LOG")
        // The embedded store unless a test names another.
        .env_remove("TAPLINE_STATE")
        .env_remove("TAPLINE_STATE_FILE");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("tapline runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The one `--json` summary line of a single-pipeline run.
pub fn summary(output: &Output) -> Value {
    let text = stdout(output);
    let line = text
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON summary in stdout:\n{text}\nstderr:\n{}",
                stderr(output)
            )
        });
    serde_json::from_str(line).expect("the summary is JSON")
}

/// Checks that every record read has exactly one outcome.
pub fn assert_counts_add_up(summary: &Value) {
    let records = &summary["records"];
    let count = |name: &str| records[name].as_u64().expect("a count");
    assert_eq!(
        count("read"),
        count("accepted")
            + count("skipped")
            + count("rejected")
            + count("failed")
            + records["unchanged"].as_u64().unwrap_or(0),
        "counts do not add up: {records}"
    );
}

/// The rejects file of a summary, one JSON value per line.
pub fn rejects(dir: &Path, summary: &Value) -> Vec<Value> {
    let Some(path) = summary["rejects_file"].as_str() else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(dir.join(path)).expect("rejects file exists");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a rejects line is JSON"))
        .collect()
}

/// `rows` profile rows with valid standard properties.
pub fn profile_csv(rows: usize) -> String {
    let mut csv = String::from("identity,Name,Email,Phone,Gender,Age,Score\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "user-{i},User {i},user{i}@example.com,+1415555{:04},{},{},{}\n",
            i % 10_000,
            if i % 2 == 0 { "F" } else { "M" },
            18 + i % 60,
            i * 7
        ));
    }
    csv
}

/// Waits until `condition` holds, or fails with `what` after `seconds`: a deadline for a
/// busy machine, never a measure of its speed.
pub fn wait_until(seconds: u64, what: &str, condition: impl FnMut() -> bool) {
    wait_until_or_show(seconds, what, condition, String::new);
}

/// [`wait_until`], with `context()` (a log, say) in the failure message. The one place
/// the tests poll: the condition is looked at every few milliseconds until the deadline.
pub fn wait_until_or_show(
    seconds: u64,
    what: &str,
    mut condition: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs `tapline run ARGS --json` in the workspace: the exit code and the first summary.
pub fn run_json(workspace: &Workspace, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.push("--json");
    let output = tapline(workspace.dir.path(), &all);
    (output.status.code(), summary(&output))
}

/// The PostgreSQL server of the tests that need one: `TAPLINE_TEST_POSTGRES` is its URL
/// (default below; `createdb tapline_test` makes the database). Without one those tests
/// are skipped with a message, except under `.ci/run`, which starts the server and sets
/// `TAPLINE_TEST_POSTGRES_REQUIRED`.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/tapline_test?sslmode=disable";

/// A schema of its own in the test database, dropped at the end.
pub struct TestDatabase {
    client: tokio_postgres::Client,
    runtime: tokio::runtime::Runtime,
    pub url: String,
    pub schema: String,
}

impl TestDatabase {
    /// The test database, or `None` (after saying how to run these tests) when there is no
    /// server outside CI.
    pub fn open() -> Option<Self> {
        let url = std::env::var("TAPLINE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connected = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = match connected {
            Ok(client) => client,
            Err(error) if std::env::var_os("TAPLINE_TEST_POSTGRES_REQUIRED").is_none() => {
                eprintln!(
                    "skipped: no PostgreSQL at {url} ({error}); start one and `createdb tapline_test`, or set TAPLINE_TEST_POSTGRES"
                );
                return None;
            }
            Err(error) => panic!("PostgreSQL at {url} is required here: {error}"),
        };
        let schema = format!("t{:016x}", rand::random::<u64>());
        let database = TestDatabase {
            client,
            runtime,
            url,
            schema,
        };
        database.execute(&format!("CREATE SCHEMA {}", database.schema));
        Some(database)
    }

    pub fn execute(&self, sql: &str) {
        let sql = sql.replace("$schema", &self.schema);
        self.runtime
            .block_on(self.client.batch_execute(&sql))
            .unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    }

    /// `connections.yaml` with the sandbox's account as `ct` and this database as `warehouse`.
    pub fn connections(&self, sandbox: &TestSandbox) -> String {
        let (account, _) = sandbox.sandbox.credentials();
        format!(
            "ct:\n  account_id: {account}\n  passcode_file: passcode.txt\n  endpoint: {}\n  request_timeout_seconds: 5\nwarehouse:\n  postgres: {}\n",
            sandbox.sandbox.base_url(),
            self.url
        )
    }

    /// Writes `connections.yaml` and `pipeline.yaml` reading `query` (with `$schema` for the
    /// test's schema) and `rest` after it.
    pub fn pipeline(&self, workspace: &Workspace, sandbox: &TestSandbox, query: &str, rest: &str) {
        workspace.write("connections.yaml", self.connections(sandbox));
        let query = query.replace("$schema", &self.schema);
        workspace.write(
            "pipeline.yaml",
            format!(
                "connection: ct\nsource:\n  database: warehouse\n  query: |\n    {}\n{rest}",
                query.replace('\n', "\n    ")
            ),
        );
    }
}

impl TestDatabase {
    /// A shared state store in this test's schema: the database's URL with the schema as
    /// the search path.
    pub fn state_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-csearch_path%3D{}",
            self.url, self.schema
        )
    }

    /// The rows of a query, each as JSON (`SELECT row_to_json(t) FROM (...) t`), in the
    /// test's schema.
    pub fn rows(&self, sql: &str) -> Vec<Value> {
        let sql = format!(
            "SELECT row_to_json(t)::text FROM ({}) t",
            sql.replace("$schema", &self.schema)
        );
        let rows = self
            .runtime
            .block_on(async {
                self.client
                    .batch_execute(&format!("SET search_path = {}", self.schema))
                    .await?;
                self.client.query(&sql, &[]).await
            })
            .unwrap_or_else(|error| panic!("{sql}: {error:?}"));
        rows.iter()
            .map(|row| serde_json::from_str(row.get(0)).expect("JSON"))
            .collect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA {} CASCADE", self.schema);
        let _ = self.runtime.block_on(self.client.batch_execute(&sql));
    }
}

/// Writes a Parquet file of one row group with the parquet crate: `schema` in Parquet's
/// message syntax, and each column's values, written as they are (every column required,
/// no NULLs). The tests make their own files, so each case is one they can read.
pub fn write_parquet(path: &Path, schema: &str, columns: &[ParquetColumn]) {
    use parquet::data_type::{ByteArrayType, FixedLenByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = std::sync::Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
    let properties = std::sync::Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::UNCOMPRESSED)
            .build(),
    );
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, properties).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for column in columns {
        let mut writer = group
            .next_column()
            .unwrap()
            .expect("a column per value list");
        match column {
            ParquetColumn::Text(values) => {
                let values: Vec<parquet::data_type::ByteArray> =
                    values.iter().map(|value| value.as_slice().into()).collect();
                writer
                    .typed::<ByteArrayType>()
                    .write_batch(&values, None, None)
                    .unwrap();
            }
            ParquetColumn::Fixed(values) => {
                let values: Vec<parquet::data_type::FixedLenByteArray> = values
                    .iter()
                    .map(|value| parquet::data_type::ByteArray::from(value.clone()).into())
                    .collect();
                writer
                    .typed::<FixedLenByteArrayType>()
                    .write_batch(&values, None, None)
                    .unwrap();
            }
            ParquetColumn::Int64(values) => {
                writer
                    .typed::<Int64Type>()
                    .write_batch(values, None, None)
                    .unwrap();
            }
        }
        writer.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// One column's values for [`write_parquet`].
pub enum ParquetColumn {
    Text(Vec<Vec<u8>>),
    Fixed(Vec<Vec<u8>>),
    Int64(Vec<i64>),
}

/// Text values for a [`ParquetColumn`].
pub fn texts(values: &[&str]) -> ParquetColumn {
    ParquetColumn::Text(
        values
            .iter()
            .map(|value| value.as_bytes().to_vec())
            .collect(),
    )
}

/// A Parquet file of profiles whose page header is damaged where the parquet crate panics
/// reading it (found by flipping each byte of a small file: this one asserts).
pub fn damaged_parquet(path: &Path) {
    write_parquet(
        path,
        "message m { required binary identity (UTF8); }",
        &[texts(&["user-0", "user-1", "user-2"])],
    );
    let mut bytes = std::fs::read(path).unwrap();
    bytes[9] = 0;
    std::fs::write(path, bytes).unwrap();
}
