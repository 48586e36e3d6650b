//! Upload benchmark: generates N profile rows, serves them to `tapline sandbox` (its own
//! process, with a latency per request), runs `tapline run` as another process, and prints
//! records/s, the client's CPU seconds and its peak RSS.
//!
//! ```text
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 200 --threads 10 --repeat 3
//! ```
//!
//! `--custom-list` uploads an audience instead (`identity,type` rows of ~22 bytes, one
//! streamed CSV): `--rows 5000000` is a 100 MB list, and the peak RSS shows it is never held
//! in memory.
//!
//! `--events` uploads Charged events from JSON Lines instead (`identity, evtName, ts, Amount,
//! Currency, Items[0].Name, Items[0].Price, Items[1].Name, Items[1].Price`, ~200 bytes a
//! line); `--mapping` sends the profiles through an output mapping (a rename, `date`,
//! `number` and `boolean` columns and a String Builder template); `--gzip` gzips the source.
//! Each is the CPU cost of one source path per million records:
//!
//! ```text
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 0 --events --repeat 3
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 0 --mapping --repeat 3
//! ```
//!
//! `--changes` measures `send: changes`: the profiles are uploaded once (seeding every
//! fingerprint), then the file is written again with 1% of its rows changed and 0.5% new,
//! and uploaded again: the second run must send exactly those, and the benchmark prints
//! each run's wall time, CPU per million rows read, peak RSS and the state store's growth per
//! fingerprint:
//!
//! ```text
//! cargo bench --bench upload -- --rows 10000000 --latency-ms 0 --changes
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 200 --threads 10 --changes
//! ```
//!
//! `--source postgres` reads the profiles from a PostgreSQL query instead (identity and six
//! properties of mixed types: text, integer, float, boolean, timestamptz; the table is made
//! in the database `TAPLINE_TEST_POSTGRES` names, by default `tapline_test` on
//! 127.0.0.1:5432); `--source parquet` from a Parquet file with the same columns (row groups
//! of 100,000 rows, snappy):
//!
//! ```text
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 0 --source postgres --repeat 3
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 0 --source mysql --repeat 3
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 0 --source parquet --repeat 3
//! ```
//!
//! `--source mysql` reads the same profiles from MariaDB (`TAPLINE_TEST_MYSQL`, default
//! `mysql://root@127.0.0.1:3306/test`; the table is made with MariaDB's `seq_0_to_N`).
//!
//! `--state postgres` keeps the state in the shared PostgreSQL store (a fresh schema of the
//! database above, dropped at the end) instead of the embedded SQLite file: every
//! checkpoint, and each request's slot of the account's budget, is then a round trip to the
//! database. `--state sqlite` (the default) is the embedded store; compare the two:
//!
//! ```text
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 200 --threads 10 --state sqlite --repeat 3
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 200 --threads 10 --state postgres --repeat 3
//! ```
//!
//! `--bucket` puts the source file (CSV, gzipped or not, or `--source parquet`) into an S3
//! bucket and reads it from there: moto's S3 server (`pip install 'moto[server]'`) on
//! loopback, started by the bench, or the endpoint `TAPLINE_TEST_S3` names. Compare with
//! the same file read locally:
//!
//! ```text
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 0 --repeat 3
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 0 --bucket --repeat 3
//! cargo bench --bench upload -- --rows 1000000 --latency-ms 0 --source parquet --bucket --repeat 3
//! ```
//!
//! With `--repeat`, the upload runs that many times and the median is reported too: CPU
//! time on a shared machine varies by a fifth from run to run.
//!
//! The API's own ceiling is `threads × 1000 / latency`: CleverTap answers one request of
//! 1000 records per latency, and tapline keeps `threads` of them in flight.

// getrusage(2) is the only way to read a child's CPU time and peak RSS.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Where `--source` says the profiles come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Csv,
    Postgres,
    Mysql,
    Parquet,
}

struct Settings {
    /// `--custom-list`: upload an audience (one streamed CSV) instead of profiles.
    custom_list: bool,
    /// `--events`: Charged events from JSON Lines instead of profiles from CSV.
    events: bool,
    /// `--mapping`: the profiles go through an output mapping.
    mapping: bool,
    /// `--gzip`: the source is gzipped.
    gzip: bool,
    /// `--changes`: a seeding upload with `send: changes`, then one of a changed file.
    changes: bool,
    /// `--source postgres|parquet`: where the profiles come from (a CSV file otherwise).
    source: Origin,
    /// `--bucket`: the source file is read from an S3 bucket on loopback.
    bucket: bool,
    /// The variables a run reads the bucket's endpoint and keys from (with `--bucket`).
    object_env: Vec<(&'static str, String)>,
    /// `--state postgres`: the shared state store, in this schema of the bench database.
    shared_state: Option<String>,
    rows: u64,
    latency_ms: u64,
    /// `--threads N` (1–10), or `--threads auto` (0 here).
    threads: u64,
    /// `--concurrency-limit N`: the sandbox answers 429 above N uploads in flight (an
    /// account other clients share).
    concurrency_limit: u64,
    /// `--latency-per-request-ms M`: each upload in flight adds M ms to the sandbox's answers.
    latency_per_request_ms: u64,
    repeat: u64,
}

impl Settings {
    /// `thread_count` as the pipeline file says it.
    fn thread_count(&self) -> String {
        if self.threads == 0 {
            "auto".into()
        } else {
            self.threads.to_string()
        }
    }

    /// Requests in flight at most: the fixed count, or for `auto` CleverTap's 15 (or the
    /// sandbox's lower limit).
    fn most_in_flight(&self) -> u64 {
        let cap = if self.threads == 0 { 15 } else { self.threads };
        cap.min(self.concurrency_limit)
    }
}

fn settings() -> Settings {
    let mut settings = Settings {
        custom_list: false,
        events: false,
        mapping: false,
        gzip: false,
        changes: false,
        source: Origin::Csv,
        bucket: false,
        object_env: Vec::new(),
        shared_state: None,
        rows: 1_000_000,
        latency_ms: 200,
        threads: 10,
        concurrency_limit: 15,
        latency_per_request_ms: 0,
        repeat: 1,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut index = 1;
    while index < args.len() {
        let value = args
            .get(index + 1)
            .and_then(|v| v.replace('_', "").parse::<u64>().ok());
        match (args[index].as_str(), value) {
            ("--rows", Some(value)) => settings.rows = value,
            ("--latency-ms", Some(value)) => settings.latency_ms = value,
            ("--threads", Some(value)) => settings.threads = value.clamp(1, 10),
            ("--threads", None) if args.get(index + 1).map(String::as_str) == Some("auto") => {
                settings.threads = 0;
            }
            ("--concurrency-limit", Some(value)) => settings.concurrency_limit = value.max(1),
            ("--latency-per-request-ms", Some(value)) => settings.latency_per_request_ms = value,
            ("--repeat", Some(value)) => settings.repeat = value.max(1),
            ("--state", _) => {
                settings.shared_state = (args.get(index + 1).map(String::as_str)
                    == Some("postgres"))
                .then(|| format!("tapline_bench_state_{}", std::process::id()));
            }
            ("--source", _) => {
                settings.source = match args.get(index + 1).map(String::as_str) {
                    Some("postgres") => Origin::Postgres,
                    Some("mysql") => Origin::Mysql,
                    Some("parquet") => Origin::Parquet,
                    _ => Origin::Csv,
                };
            }
            ("--bucket", _) => settings.bucket = true,
            (flag @ ("--custom-list" | "--events" | "--mapping" | "--gzip" | "--changes"), _) => {
                match flag {
                    "--custom-list" => settings.custom_list = true,
                    "--events" => settings.events = true,
                    "--mapping" => settings.mapping = true,
                    "--changes" => settings.changes = true,
                    _ => settings.gzip = true,
                }
                index += 1;
                continue;
            }
            _ => {
                index += 1;
                continue;
            }
        }
        index += 2;
    }
    if settings.custom_list {
        // A second `create` of the same segment would fail, as CleverTap's does.
        settings.repeat = 1;
    }
    settings
}

/// An audience: `identity,type` rows of about 22 bytes (5 million rows ≈ 100 MB).
fn write_audience(out: &mut dyn Write, rows: u64) -> std::io::Result<()> {
    writeln!(out, "identity,type")?;
    for i in 0..rows {
        writeln!(out, "user-{i:010}-aud,i")?;
    }
    Ok(())
}

/// Charged events as JSON Lines, two items each (about 200 bytes a line).
fn write_events(out: &mut dyn Write, rows: u64) -> std::io::Result<()> {
    for i in 0..rows {
        writeln!(
            out,
            r#"{{"identity":"user-{i}","evtName":"Charged","ts":{},"Amount":{}.5,"Currency":"USD","Items[0].Name":"Shoes {}","Items[0].Price":{},"Items[1].Name":"Socks","Items[1].Price":4.5}}"#,
            1_700_000_000 + i % 10_000_000,
            20 + i % 300,
            i % 50,
            15 + i % 200
        )?;
    }
    Ok(())
}

/// Profiles as the output-mapping case reads them: source column names to rename and
/// convert.
fn write_mapped_rows(out: &mut dyn Write, rows: u64) -> std::io::Result<()> {
    writeln!(
        out,
        "user_id,full_name,email,signup_date,lifetime_value,is_vip,plan"
    )?;
    for i in 0..rows {
        writeln!(
            out,
            "user-{i},User {i},user{i}@example.com,2024-{:02}-{:02},{}.25,{},Tier {}",
            1 + i % 12,
            1 + i % 28,
            i % 5000,
            if i % 3 == 0 { "yes" } else { "no" },
            i % 5
        )?;
    }
    Ok(())
}

/// The output mapping of `--mapping`.
const MAPPING: &str = "output:
  export_all_columns: true
  columns:
    - { source: user_id, name: identity }
    - { source: full_name, name: Name }
    - { source: email, name: Email }
    - { source: signup_date, name: Signup Date, type: date }
    - { source: lifetime_value, name: LTV, type: number }
    - { source: is_vip, name: VIP, type: boolean }
  strings:
    - { name: Campaign, value: \"bench-{column:plan}-{timestamp:%Y%m%d}\" }
";

fn write_source(path: &std::path::Path, settings: &Settings) -> std::io::Result<()> {
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut out: Box<dyn Write> = if settings.gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(file)
    };
    if settings.custom_list {
        write_audience(&mut out, settings.rows)?;
    } else if settings.events {
        write_events(&mut out, settings.rows)?;
    } else if settings.mapping {
        write_mapped_rows(&mut out, settings.rows)?;
    } else {
        write_rows(&mut out, settings.rows)?;
    }
    out.flush()
}

/// The URL of the database `--source postgres` reads.
fn bench_database() -> String {
    std::env::var("TAPLINE_TEST_POSTGRES").unwrap_or_else(|_| {
        "postgres://postgres@127.0.0.1:5432/tapline_test?sslmode=disable".into()
    })
}

/// Runs SQL on the bench database.
fn execute(sql: &str) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&bench_database(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute(sql).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// `--state postgres`: the URL of the shared store in `schema` of the bench database.
fn shared_state_url(schema: &str) -> String {
    let database = bench_database();
    let separator = if database.contains('?') { '&' } else { '?' };
    format!("{database}{separator}options=-csearch_path%3D{schema}")
}

/// `--source postgres`: a table of `rows` profiles (identity and six properties of mixed
/// types), made by the server itself.
fn write_table(rows: u64) -> Result<(), Box<dyn std::error::Error>> {
    execute(&format!(
        r#"DROP TABLE IF EXISTS tapline_bench_profiles;
        CREATE TABLE tapline_bench_profiles AS
        SELECT 'user-' || i AS identity, 'User ' || i AS "Name",
               'user' || i || '@example.com' AS "Email", (18 + i % 60)::integer AS "Age",
               (i * 7)::float8 / 3 AS "Score", i % 2 = 0 AS "VIP",
               timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' AS "Joined"
        FROM generate_series(0, {rows} - 1) i;"#
    ))?;
    // On its own: VACUUM cannot run within the transaction of several statements.
    execute("VACUUM ANALYZE tapline_bench_profiles")
}

/// The URL of the database `--source mysql` reads.
fn bench_mysql() -> String {
    std::env::var("TAPLINE_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// `--source mysql`: the same profiles in MariaDB, made by the server itself.
fn write_mysql_table(rows: u64) -> Result<(), Box<dyn std::error::Error>> {
    use mysql_async::prelude::Queryable;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&bench_mysql())?).await?;
        conn.query_drop(format!(
            "DROP TABLE IF EXISTS tapline_bench_profiles;
            CREATE TABLE tapline_bench_profiles AS
            SELECT CONCAT('user-', seq) AS identity, CONCAT('User ', seq) AS Name,
                   CONCAT('user', seq, '@example.com') AS Email, 18 + seq % 60 AS Age,
                   seq * 7 / 3e0 AS Score, CAST(seq % 2 = 0 AS UNSIGNED) AS VIP,
                   TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND AS Joined
            FROM seq_0_to_{};",
            rows.max(1) - 1
        ))
        .await?;
        conn.disconnect().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// `--source parquet`: the same profiles as a Parquet file, in row groups of 100,000.
fn write_parquet(path: &std::path::Path, rows: u64) -> Result<(), Box<dyn std::error::Error>> {
    use parquet::data_type::{
        BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type,
    };
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    const GROUP: u64 = 100_000;
    let schema = std::sync::Arc::new(parquet::schema::parser::parse_message_type(
        "message profiles {
            REQUIRED BYTE_ARRAY identity (UTF8);
            REQUIRED BYTE_ARRAY Name (UTF8);
            REQUIRED BYTE_ARRAY Email (UTF8);
            REQUIRED INT32 Age;
            REQUIRED DOUBLE Score;
            REQUIRED BOOLEAN VIP;
            REQUIRED INT64 Joined (TIMESTAMP_MILLIS);
        }",
    )?);
    let properties = std::sync::Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(path)?;
    let mut writer = SerializedFileWriter::new(file, schema, properties)?;
    let mut start = 0;
    while start < rows {
        let range = start..(start + GROUP).min(rows);
        let text = |f: &dyn Fn(u64) -> String| -> Vec<ByteArray> {
            range
                .clone()
                .map(|i| ByteArray::from(f(i).as_str()))
                .collect()
        };
        let mut group = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            match index {
                0 => column.typed::<ByteArrayType>().write_batch(
                    &text(&|i| format!("user-{i}")),
                    None,
                    None,
                )?,
                1 => column.typed::<ByteArrayType>().write_batch(
                    &text(&|i| format!("User {i}")),
                    None,
                    None,
                )?,
                2 => column.typed::<ByteArrayType>().write_batch(
                    &text(&|i| format!("user{i}@example.com")),
                    None,
                    None,
                )?,
                3 => column.typed::<Int32Type>().write_batch(
                    &range
                        .clone()
                        .map(|i| 18 + (i % 60) as i32)
                        .collect::<Vec<_>>(),
                    None,
                    None,
                )?,
                4 => column.typed::<DoubleType>().write_batch(
                    &range
                        .clone()
                        .map(|i| (i * 7) as f64 / 3.0)
                        .collect::<Vec<_>>(),
                    None,
                    None,
                )?,
                5 => column.typed::<BoolType>().write_batch(
                    &range.clone().map(|i| i % 2 == 0).collect::<Vec<_>>(),
                    None,
                    None,
                )?,
                _ => column.typed::<Int64Type>().write_batch(
                    &range
                        .clone()
                        .map(|i| 1_704_067_200_000 + i as i64 * 1000)
                        .collect::<Vec<_>>(),
                    None,
                    None,
                )?,
            };
            column.close()?;
            index += 1;
        }
        group.close()?;
        start = range.end;
    }
    writer.close()?;
    Ok(())
}

fn write_rows(out: &mut dyn Write, rows: u64) -> std::io::Result<()> {
    write_profiles(out, 0..rows, |_| 0)
}

/// Profile rows `range`; `bump(i)` is added to row i's score (a changed row).
fn write_profiles(
    out: &mut dyn Write,
    range: std::ops::Range<u64>,
    bump: impl Fn(u64) -> u64,
) -> std::io::Result<()> {
    writeln!(
        out,
        "identity,Name,Email,Phone,Gender,Age,Customer Type,Score"
    )?;
    for i in range {
        let gender = if i % 2 == 0 { "F" } else { "M" };
        writeln!(
            out,
            "user-{i},User {i},user{i}@example.com,+1415{:07},{gender},{},Tier {},{}",
            i % 10_000_000,
            18 + i % 60,
            i % 5,
            i * 7 + bump(i)
        )?;
    }
    Ok(())
}

/// One `tapline` process, measured alone: its stdout, wall seconds, CPU seconds and peak
/// RSS in KiB (wait4(2) gives the one child's figures).
fn measured(command: &mut Command) -> Result<(String, f64, f64, i64), Box<dyn std::error::Error>> {
    use std::io::Read;
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .ok_or("no stdout")?
        .read_to_string(&mut stdout)?;
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: wait4 writes the child's status and a whole `rusage` into the pointers given.
    let usage = unsafe {
        libc::wait4(child.id() as i32, &mut status, 0, usage.as_mut_ptr());
        usage.assume_init()
    };
    let wall = started.elapsed().as_secs_f64();
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    Ok((stdout, wall, cpu, usage.ru_maxrss))
}

/// The state store's bytes on disk (the database and its write-ahead log).
fn store_bytes(dir: &std::path::Path) -> u64 {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(".tapline").join(name)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// `--changes`: seeds every fingerprint with a full upload, then uploads the file with 1% of
/// its rows changed and 0.5% new, and checks that exactly those were sent.
fn changes_case(
    tapline: &str,
    dir: &std::path::Path,
    source: &std::path::Path,
    settings: &Settings,
) -> Result<(), Box<dyn std::error::Error>> {
    let rows = settings.rows;
    let report = |label: &str, expected: u64| -> Result<(f64, u64), Box<dyn std::error::Error>> {
        let before = store_bytes(dir);
        let (stdout, wall, cpu, rss) = measured(
            Command::new(tapline)
                .args(["run", "bench.yaml", "--json"])
                .current_dir(dir),
        )?;
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().next().unwrap_or("{}"))?;
        let accepted = summary["records"]["accepted"].as_u64().unwrap_or(0);
        let read = summary["records"]["read"].as_u64().unwrap_or(0);
        if accepted != expected || summary["status"] != "succeeded" {
            return Err(format!("{label}: expected {expected} records sent: {stdout}").into());
        }
        let grown = store_bytes(dir).saturating_sub(before);
        println!(
            "{label:<17} {wall:.2} s, {read} read, {accepted} sent, {} unchanged, client CPU {cpu:.2} s ({:.2} s per million read), peak RSS {:.1} MiB, store +{:.1} MiB ({:.1} bytes per record sent)",
            summary["records"]["unchanged"].as_u64().unwrap_or(0),
            cpu * 1e6 / read.max(1) as f64,
            rss as f64 / 1024.0,
            grown as f64 / (1 << 20) as f64,
            grown as f64 / accepted.max(1) as f64
        );
        Ok((wall, accepted))
    };
    let (seed_wall, _) = report("seeding run", rows)?;
    // 1% of the rows changed (every hundredth), 0.5% new ones at the end.
    let new_rows = rows / 200;
    {
        let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(source)?);
        write_profiles(&mut out, 0..rows + new_rows, |i| u64::from(i % 100 == 0))?;
        out.flush()?;
    }
    let changed = rows.div_ceil(100);
    let (second_wall, _) = report("changed run", changed + new_rows)?;
    println!(
        "wall time         the changed run took {:.1}% of the full upload's",
        100.0 * second_wall / seed_wall
    );
    Ok(())
}

/// The S3 endpoint of `--bucket`: `TAPLINE_TEST_S3`, or moto's server started on a free
/// port (returned, to be stopped at the end).
fn s3_endpoint() -> Result<(Option<std::process::Child>, String), Box<dyn std::error::Error>> {
    if let Ok(endpoint) = std::env::var("TAPLINE_TEST_S3") {
        return Ok((None, endpoint));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| {
            format!("moto_server ({error}): pip install 'moto[server]', or set TAPLINE_TEST_S3")
        })?;
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(&address).is_err() {
        if Instant::now() > deadline {
            return Err("moto_server did not listen within 60 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok((Some(server), format!("http://{address}")))
}

/// Makes `bucket` on the S3 server at `endpoint` and puts `file` at `key` (moto takes
/// unsigned requests).
fn put_object(
    endpoint: &str,
    bucket: &str,
    key: &str,
    file: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Read;
    let address = endpoint.trim_start_matches("http://");
    let request = |head: String,
                   body: Option<&std::path::Path>|
     -> Result<String, Box<dyn std::error::Error>> {
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.write_all(head.as_bytes())?;
        if let Some(path) = body {
            std::io::copy(&mut std::fs::File::open(path)?, &mut stream)?;
        }
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    let answer = request(
        format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        None,
    )?;
    if !answer.starts_with("HTTP/1.1 200") && !answer.contains("BucketAlreadyOwnedByYou") {
        return Err(format!("cannot make the bucket: {answer}").into());
    }
    let length = std::fs::metadata(file)?.len();
    let answer = request(
        format!(
            "PUT /{bucket}/{key} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        ),
        Some(file),
    )?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("cannot put the object: {answer}").into());
    }
    Ok(())
}

/// `GET /_sandbox/inspect` of the sandbox at `url` (`http://127.0.0.1:PORT`).
fn inspect(url: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use std::io::Read;
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(
        stream,
        "GET /_sandbox/inspect HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(serde_json::from_str(body)?)
}

/// CPU seconds and peak RSS (KiB) of the children reaped so far.
fn children_usage() -> (f64, i64) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
        usage.ru_maxrss,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = settings();
    let tapline = env!("CARGO_BIN_EXE_tapline");
    let dir = tempfile::tempdir()?;
    let name = match (settings.source, settings.events, settings.gzip) {
        (Origin::Postgres, _, _) => "a PostgreSQL query",
        (Origin::Mysql, _, _) => "a MySQL query",
        (Origin::Parquet, _, _) => "source.parquet",
        (_, true, false) => "source.jsonl",
        (_, true, true) => "source.jsonl.gz",
        (_, false, false) => "source.csv",
        (_, false, true) => "source.csv.gz",
    };
    let source = dir.path().join(name);
    eprintln!("generating {} rows...", settings.rows);
    let source_yaml = match settings.source {
        Origin::Postgres => {
            write_table(settings.rows)?;
            format!(
                "source:\n  database: {{postgres: \"{}\"}}\n  query: SELECT * FROM tapline_bench_profiles\n",
                bench_database()
            )
        }
        Origin::Mysql => {
            write_mysql_table(settings.rows)?;
            format!(
                "source:\n  database: {{mysql: \"{}\"}}\n  query: SELECT * FROM tapline_bench_profiles\n",
                bench_mysql()
            )
        }
        Origin::Parquet => {
            write_parquet(&source, settings.rows)?;
            format!("source: {{path: {name}}}\n")
        }
        Origin::Csv => {
            write_source(&source, &settings)?;
            format!("source: {{path: {name}}}\n")
        }
    };
    let size_mib =
        std::fs::metadata(&source).map_or(0, |metadata| metadata.len()) as f64 / (1 << 20) as f64;
    let mut settings = settings;
    let mut s3_server = None;
    let source_yaml = if settings.bucket {
        let (server, endpoint) = s3_endpoint()?;
        s3_server = server;
        put_object(
            &endpoint,
            "tapline-bench",
            &format!("bench/{name}"),
            &source,
        )?;
        settings.object_env = vec![
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ];
        format!("source: {{path: \"s3://tapline-bench/bench/{name}\"}}\n")
    } else {
        source_yaml
    };

    let mut sandbox = Command::new(tapline)
        .args(["sandbox", "--listen", "127.0.0.1:0", "--keep-records", "0"])
        .args(["--latency-ms", &settings.latency_ms.to_string()])
        .args([
            "--latency-per-request-ms",
            &settings.latency_per_request_ms.to_string(),
        ])
        .args([
            "--concurrency-limit",
            &settings.concurrency_limit.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut url = String::new();
    BufReader::new(sandbox.stdout.take().ok_or("no sandbox stdout")?).read_line(&mut url)?;
    let url = url.trim().to_string();

    std::fs::write(
        dir.path().join("passcode"),
        tapline::sandbox::DEFAULT_PASSCODE,
    )?;
    std::fs::write(
        dir.path().join("bench.yaml"),
        format!(
            "connection:\n  account_id: {}\n  passcode_file: passcode\n  endpoint: {url}\n{source_yaml}target: {}\nthread_count: {}\n{}{}",
            tapline::sandbox::DEFAULT_ACCOUNT_ID,
            if settings.custom_list {
                "{entity: custom_list, custom_list: {name: Bench, uploader_email: admin@example.com, segment_mode: create}}"
            } else if settings.events {
                "{entity: user_events}"
            } else {
                "{entity: user_profiles}"
            },
            settings.thread_count(),
            if settings.mapping { MAPPING } else { "" },
            if settings.changes {
                "send: changes\n"
            } else {
                ""
            },
        ),
    )?;

    println!(
        "rows              {} ({size_mib:.0} MiB {name})",
        settings.rows
    );
    println!(
        "threads, latency  {}, {} ms (+{} ms per request in flight), the account's limit {}",
        settings.thread_count(),
        settings.latency_ms,
        settings.latency_per_request_ms,
        settings.concurrency_limit
    );
    if settings.changes {
        let result = changes_case(tapline, dir.path(), &source, &settings);
        let _ = sandbox.kill();
        let _ = sandbox.wait();
        return result;
    }
    let mut state_args = Vec::new();
    if let Some(schema) = &settings.shared_state {
        execute(&format!("CREATE SCHEMA {schema}"))?;
        state_args = vec!["--state".to_string(), shared_state_url(schema)];
        println!("state             PostgreSQL (schema {schema})");
    }
    let result = uploads(tapline, dir.path(), &url, &settings, &state_args);
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    if let Some(mut server) = s3_server {
        let _ = server.kill();
        let _ = server.wait();
    }
    if let Some(schema) = &settings.shared_state {
        execute(&format!("DROP SCHEMA {schema} CASCADE"))?;
    }
    result
}

/// Runs the upload `--repeat` times and prints each run and the medians.
fn uploads(
    tapline: &str,
    dir: &std::path::Path,
    url: &str,
    settings: &Settings,
    state_args: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut runs = Vec::new();
    let mut cpu_before = 0.0;
    for run in 1..=settings.repeat {
        eprintln!(
            "run {run}: uploading to {url} with {} ms latency...",
            settings.latency_ms
        );
        let started = Instant::now();
        let output = Command::new(tapline)
            // `--force`: every repeat sends the same file again.
            .args(["run", "bench.yaml", "--json", "--force"])
            .args(state_args)
            .envs(
                settings
                    .object_env
                    .iter()
                    .map(|(name, value)| (name, value)),
            )
            .current_dir(dir)
            .output()?;
        let wall = started.elapsed().as_secs_f64();
        let (cpu_total, peak_rss_kib) = children_usage();
        let cpu_seconds = cpu_total - cpu_before;
        cpu_before = cpu_total;

        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().next().unwrap_or("{}"))?;
        let accepted = summary["records"]["accepted"].as_u64().unwrap_or(0);
        if !output.status.success() || accepted != settings.rows {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("the run did not deliver every row: {stdout}\n{stderr}").into());
        }
        let rate = accepted as f64 / wall;
        let per_million = cpu_seconds * 1e6 / accepted as f64;
        let mut line = format!("run {run:<2}            {wall:.2} s, {rate:.0} records/s");
        if settings.latency_ms > 0 && !settings.custom_list {
            let in_flight = settings.most_in_flight();
            let latency = settings.latency_ms + settings.latency_per_request_ms * in_flight;
            let ceiling = in_flight as f64 * 1000.0 / (latency as f64 / 1000.0);
            line += &format!(
                " ({:.1}% of the {in_flight}-in-flight ceiling {ceiling:.0})",
                100.0 * rate / ceiling
            );
        }
        line += &format!(
            ", client CPU {cpu_seconds:.2} s ({per_million:.2} s per million), peak RSS {:.1} MiB",
            peak_rss_kib as f64 / 1024.0
        );
        println!("{line}");
        if !settings.custom_list {
            // What the sandbox saw (since it started: every repeat so far) and what the
            // run's limit did.
            let inspection = inspect(url)?;
            let uploads = inspection["requests_by_api"]["upload"]
                .as_u64()
                .unwrap_or(0);
            let throttled = inspection["throttled"].as_u64().unwrap_or(0);
            println!(
                "  in flight       limit {} · most on the sandbox {} · 429s {throttled} of {uploads} uploads ({:.2}%)",
                summary["concurrency"],
                inspection["max_in_flight"],
                100.0 * throttled as f64 / uploads.max(1) as f64
            );
        }
        if settings.custom_list {
            // What the sandbox's S3 saw of this run's upload.
            let inspection = inspect(url)?;
            let upload = inspection["presigned_uploads"]
                .as_array()
                .and_then(|uploads| uploads.last())
                .cloned()
                .unwrap_or_default();
            println!(
                "  upload          status {}, Content-Length {}, {} bytes received, chunked: {}",
                upload["status"],
                upload["headers"]["content-length"]
                    .as_str()
                    .unwrap_or("none"),
                upload["bytes_received"],
                upload["headers"].get("transfer-encoding").is_some()
            );
        }
        runs.push((rate, per_million));
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "median            {:.0} records/s, {:.2} s client CPU per million records",
        median(runs.iter().map(|run| run.0).collect()),
        median(runs.iter().map(|run| run.1).collect())
    );
    Ok(())
}
