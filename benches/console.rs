//! Console benchmark: `tapline ui` over a folder of N pipelines and a history of M runs.
//! Prints, for each page and API answer, the median and slowest time to answer over loopback
//! (the server's work plus a loopback round trip) and its size, and the server's resident memory.
//!
//! ```text
//! cargo bench --bench console -- --pipelines 200 --runs 100000 --requests 20
//! ```
//!
//! The history is written straight into the embedded store's SQLite file, in one transaction
//! (100,000 runs through tapline would take hours); the store is made by `tapline ui` first,
//! so its schema is tapline's own. Linux only: memory is read from `/proc/<pid>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn argument(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/<pid>/status` value in KiB, e.g. `VmHWM`.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Pipelines like an operator's folder: events and profiles, half scheduled in a zone.
fn write_pipelines(dir: &Path, count: u64) {
    std::fs::write(dir.join("passcode"), "BENCH-PASSCODE").unwrap();
    std::fs::write(dir.join("events.csv"), "identity,evtName,ts\n").unwrap();
    for index in 0..count {
        let schedule = if index % 2 == 0 {
            format!(
                "schedule: {{cron: \"{} {} * * *\", timezone: Asia/Kolkata}}\n",
                index % 60,
                index % 24
            )
        } else {
            String::new()
        };
        std::fs::write(
            dir.join(format!("pipeline_{index:03}.yaml")),
            format!(
                "description: Nightly events of segment {index}\nconnection: {{account_id: BENCH, passcode_file: passcode, endpoint: \"http://127.0.0.1:9\"}}\nsource: {{path: events.csv}}\ntarget: {{entity: user_events}}\n{schedule}"
            ),
        )
        .unwrap();
    }
}

/// `runs` finished runs spread over the pipelines, one a minute back from now.
fn write_history(database: &Path, pipelines: u64, runs: u64) {
    let mut connection = rusqlite::Connection::open(database).unwrap();
    let transaction = connection.transaction().unwrap();
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO runs (run_id, pipeline, pipeline_file, trigger, started_at, finished_at,
                 status, read, accepted, skipped, rejected, failed, requests, retries, destination)
                 VALUES (?1, ?2, ?3, 'schedule', ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, 0,
                 'BENCH@http://127.0.0.1:9')",
            )
            .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        for index in 0..runs {
            let started = now - (runs - index) as i64 * 60_000;
            let pipeline = format!("pipeline_{:03}", index % pipelines);
            let run_id = format!(
                "{}-{:04x}",
                chrono::DateTime::from_timestamp_millis(started)
                    .unwrap()
                    .format("%Y%m%dT%H%M%SZ"),
                index % 0x10000
            );
            let rejected = index % 7;
            insert
                .execute(rusqlite::params![
                    run_id,
                    pipeline,
                    format!("/pipelines/{pipeline}.yaml"),
                    started,
                    started + 42_000,
                    if rejected == 0 { "succeeded" } else { "failed" },
                    10_000,
                    10_000 - rejected as i64,
                    0,
                    rejected as i64,
                    10,
                ])
                .unwrap();
        }
    }
    transaction.commit().unwrap();
}

/// `GET path`: the answer's size in bytes and how long it took.
fn get(address: &str, path: &str) -> (usize, Duration) {
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        text.lines().next().unwrap_or_default()
    );
    let body = text
        .split_once("\r\n\r\n")
        .map_or(0, |(_, body)| body.len());
    (body, took)
}

fn main() {
    let pipelines = argument("--pipelines", 200);
    let runs = argument("--runs", 100_000);
    let requests = argument("--requests", 20).max(1);
    let dir = tempfile::tempdir().unwrap();
    write_pipelines(dir.path(), pipelines);

    let ui = |dir: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapline"))
            .current_dir(dir)
            .args(["ui", "--dir", ".", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("tapline ui said {line:?}"))
            .to_string();
        (child, address)
    };
    // Made by tapline itself, then filled.
    let (mut first, _) = ui(dir.path());
    let _ = first.kill();
    let _ = first.wait();
    let filling = Instant::now();
    write_history(&dir.path().join(".tapline/state.db"), pipelines, runs);
    println!(
        "history: {runs} runs over {pipelines} pipelines written in {:.1} s",
        filling.elapsed().as_secs_f64()
    );

    let (mut server, address) = ui(dir.path());
    let some_pipeline = format!("pipeline_{:03}", pipelines / 2);
    let pages = [
        "/".to_string(),
        "/api/pipelines".to_string(),
        "/runs".to_string(),
        "/api/runs".to_string(),
        format!("/runs?pipeline={some_pipeline}&status=failed"),
        format!("/pipelines/{some_pipeline}"),
        "/api/running".to_string(),
    ];
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "page", "median ms", "max ms", "KB"
    );
    for page in &pages {
        get(&address, page);
        let mut times: Vec<Duration> = Vec::new();
        let mut size = 0;
        for _ in 0..requests {
            let (bytes, took) = get(&address, page);
            size = bytes;
            times.push(took);
        }
        times.sort();
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>10.1}",
            page,
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0,
            size as f64 / 1024.0
        );
    }
    println!(
        "tapline ui peak resident memory: {:.1} MiB",
        status_kib(server.id(), "VmHWM") as f64 / 1024.0
    );
    let _ = server.kill();
    let _ = server.wait();
}
