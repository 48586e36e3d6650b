//! The shared state store (`--state postgres://…`) with real processes: four runs of one
//! account within its budget of requests in flight, three daemons that run each fire once
//! (one killed mid-way), a killed run taken over when its lease expires, and a database
//! that goes away during a run. They need PostgreSQL (see `common::TestDatabase`).

use crate::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

/// `tapline <args> --state <url>` started in the workspace, its log (stderr) in `log`.
fn spawn(workspace: &Workspace, args: &[&str], state: &str, log: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(args)
        .args(["--state", state])
        .current_dir(workspace.dir.path())
        .env("TAPLINE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(workspace.path(log)).unwrap())
        .spawn()
        .expect("tapline starts")
}

/// The history in the shared store, newest first.
fn history(workspace: &Workspace, state: &str) -> Vec<Value> {
    let output = tapline(
        workspace.dir.path(),
        &["history", "--json", "--limit", "10000", "--state", state],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_str::<Value>(&stdout(&output))
        .expect("history --json is JSON")
        .as_array()
        .expect("an array")
        .clone()
}

fn finished_summary(child: Child) -> (Option<i32>, Value) {
    let output = child.wait_with_output().expect("it ends");
    (output.status.code(), summary(&output))
}

#[test]
fn four_runs_on_one_account_never_exceed_its_fifteen_uploads_in_flight() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    const ROWS: usize = 30_000;
    // Requests take long enough that the four processes' requests overlap.
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let state = database.state_url();
    for index in 0..4 {
        let csv = profile_csv(ROWS).replace("user-", &format!("p{index}-"));
        workspace.write(&format!("p{index}.csv"), csv);
        workspace.pipeline(
            &format!("p{index}"),
            &sandbox,
            &format!("source: {{path: p{index}.csv}}\ntarget: {{entity: user_profiles}}\nthread_count: 10\n"),
        );
    }
    let runs: Vec<Child> = (0..4)
        .map(|index| {
            spawn(
                &workspace,
                &["run", &format!("p{index}.yaml"), "--json"],
                &state,
                &format!("p{index}.log"),
            )
        })
        .collect();
    for (index, run) in runs.into_iter().enumerate() {
        let (code, summary) = finished_summary(run);
        assert_eq!(
            code,
            Some(0),
            "{summary}\n{}",
            std::fs::read_to_string(workspace.path(&format!("p{index}.log"))).unwrap_or_default()
        );
        assert_eq!(summary["records"]["accepted"], ROWS as u64);
    }
    let seen = sandbox.inspect();
    assert_eq!(seen.distinct_profiles, 4 * ROWS, "every record arrived");
    assert_eq!(seen.throttled, 0, "CleverTap never had to refuse one");
    // Forty request threads in all: the shared budget held them to fifteen, and more than
    // one process's ten were in flight at once.
    assert!(seen.max_in_flight <= 15, "{} in flight", seen.max_in_flight);
    assert!(seen.max_in_flight > 10, "{} in flight", seen.max_in_flight);
    // No slot is left taken.
    let held = database.rows("SELECT slot FROM request_slots WHERE holder IS NOT NULL");
    assert!(held.is_empty(), "{held:?}");
}

#[test]
fn three_daemons_run_every_fire_once_also_after_one_is_killed() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let state = database.state_url();
    workspace.write("vip.csv", profile_csv(50));
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: vip.csv}\ntarget: {entity: user_profiles}\nrerun: always\nschedule: {cron: \"*/2 * * * * *\"}\n",
    );
    let args = ["daemon", "--dir", ".", "--lease-seconds", "2"];
    let mut daemons: Vec<Option<Child>> = (0..3)
        .map(|index| {
            Some(spawn(
                &workspace,
                &args,
                &state,
                &format!("daemon{index}.log"),
            ))
        })
        .collect();
    let logs = || {
        (0..3)
            .map(|index| {
                std::fs::read_to_string(workspace.path(&format!("daemon{index}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    let started = Instant::now();
    let finished_runs = |runs: &[Value]| {
        runs.iter()
            .filter(|run| run["status"] == "succeeded")
            .count()
    };
    wait_until_or_show(
        60,
        "five runs",
        || finished_runs(&history(&workspace, &state)) >= 5,
        logs,
    );

    // Kill -9 the daemon that ran the latest fire, between two fires.
    let runs = history(&workspace, &state);
    let latest = runs
        .iter()
        .find(|run| run["status"] == "succeeded")
        .expect("a run");
    let pid: u32 = latest["runner"]
        .as_str()
        .and_then(|runner| runner.rsplit(':').next())
        .and_then(|pid| pid.parse().ok())
        .expect("the history names the process");
    let victim = daemons
        .iter_mut()
        .find(|daemon| daemon.as_ref().is_some_and(|child| child.id() == pid))
        .expect("the runner is one of the daemons");
    let mut child = victim.take().unwrap();
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let killed_at = chrono::Utc::now().timestamp_millis();

    // The others keep the schedule going, for thirty seconds in all.
    let runs_at_kill = runs.len();
    wait_until_or_show(
        60,
        "the other daemons' runs",
        || {
            started.elapsed() >= Duration::from_secs(30)
                && history(&workspace, &state).len() >= runs_at_kill + 5
        },
        logs,
    );
    for child in daemons.iter_mut().flatten() {
        let _ = Command::new("kill")
            .args(["-15", &child.id().to_string()])
            .status();
        child.wait().expect("stops");
    }

    let runs = history(&workspace, &state);
    let fires: Vec<i64> = runs
        .iter()
        .map(|run| {
            run["scheduled_for_ms"]
                .as_i64()
                .expect("a schedule run names its fire")
        })
        .collect();
    let distinct: BTreeSet<i64> = fires.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        fires.len(),
        "a fire ran twice: {fires:?}\n{}",
        logs()
    );
    // One run in detail names its fire and the process that ran it.
    let run_id = runs[0]["run_id"].as_str().unwrap();
    let detail = stdout(&tapline(
        workspace.dir.path(),
        &["history", "--run", run_id, "--state", &state],
    ));
    assert!(detail.contains("schedule, the fire of 20"), "{detail}");
    assert!(detail.contains("ran in    "), "{detail}");
    let runners: BTreeSet<&str> = runs
        .iter()
        .filter_map(|run| run["runner"].as_str())
        .collect();
    assert!(
        runners.len() >= 2,
        "the daemons shared the fires: {runners:?}"
    );
    // Every fire from the first to the last, one every two seconds, ran once, or was
    // skipped (and logged so) because the previous run still held the pipeline: a run
    // slower than two seconds on a busy machine, or the killed daemon's if it was mid-run
    // (its lease is waited out).
    let skipped: BTreeSet<i64> = logs()
        .lines()
        .filter(|line| line.contains("skipped"))
        .filter_map(|line| line.split("fire_ms=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        skipped.is_disjoint(&distinct),
        "a fire both ran and was skipped"
    );
    let first = *distinct.first().unwrap();
    let last = *distinct.last().unwrap();
    assert!(last > killed_at, "fires ran after the kill");
    let expected: Vec<i64> = (0..)
        .map(|step| first + step * 2000)
        .take_while(|fire| *fire <= last)
        .collect();
    let missing: Vec<&i64> = expected
        .iter()
        .filter(|fire| !distinct.contains(fire) && !skipped.contains(fire))
        .collect();
    // Only a fire the killed daemon had claimed and not yet started can be lost.
    assert!(
        missing.len() <= 1
            && missing
                .iter()
                .all(|fire| (killed_at - 2000..=killed_at + 2000).contains(*fire)),
        "fires that neither ran nor were skipped: {missing:?} (killed at {killed_at})\n{}",
        logs()
    );
    assert!(
        skipped.len() * 3 <= expected.len(),
        "most fires ran: {} of {} skipped",
        skipped.len(),
        expected.len()
    );
    assert!(
        runs.iter().all(|run| run["status"] == "succeeded"
            || run["status"] == "abandoned"
            || run["status"] == "running"),
        "{runs:?}"
    );
}

#[test]
fn two_daemons_send_each_arriving_file_once() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let state = database.state_url();
    std::fs::create_dir(workspace.path("exports")).unwrap();
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: \"exports/vip_*.csv\"}\ntarget: {entity: user_profiles}\ntrigger: file_arrival\n",
    );
    let args = ["daemon", "--dir", ".", "--lease-seconds", "2"];
    let daemons: Vec<Child> = (0..2)
        .map(|index| spawn(&workspace, &args, &state, &format!("daemon{index}.log")))
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
    wait_until_or_show(
        30,
        "both daemons to start",
        || logs().matches("daemon started").count() == 2,
        logs,
    );
    // Files renamed into place, as exporters do: both daemons see each at once.
    for index in 0..4 {
        let name = format!("exports/vip_{index}.csv");
        let csv = profile_csv(100).replace("user-", &format!("f{index}-"));
        workspace.write(&format!("{name}.tmp"), csv);
        std::fs::rename(
            workspace.path(&format!("{name}.tmp")),
            workspace.path(&name),
        )
        .unwrap();
    }
    wait_until_or_show(
        60,
        "every file",
        || {
            let runs = history(&workspace, &state);
            runs.len() >= 4 && runs.iter().all(|run| run["status"] == "succeeded")
        },
        logs,
    );
    for mut child in daemons {
        let _ = Command::new("kill")
            .args(["-15", &child.id().to_string()])
            .status();
        child.wait().expect("stops");
    }
    let runs = history(&workspace, &state);
    assert_eq!(runs.len(), 4, "one run per file: {runs:?}\n{}", logs());
    let seen = sandbox.inspect();
    assert_eq!(seen.distinct_profiles, 400);
    assert_eq!(seen.profiles, 400, "no file was sent twice\n{}", logs());
}

#[test]
fn a_killed_runs_lease_is_taken_over_when_it_expires_and_the_run_resumes() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    const ROWS: usize = 20_000;
    const THREADS: u64 = 2;
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(50),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let state = database.state_url();
    workspace.write("vip.csv", profile_csv(ROWS));
    workspace.pipeline(
        "vip",
        &sandbox,
        &format!("source: {{path: vip.csv}}\ntarget: {{entity: user_profiles}}\nthread_count: {THREADS}\n"),
    );
    let args = ["run", "vip.yaml", "--json", "--lease-seconds", "3"];
    let mut first = spawn(&workspace, &args, &state, "first.log");
    wait_until(60, "the first run to be half-way", || {
        sandbox.inspect().profiles >= 6_000
    });
    first.kill().expect("kill -9");
    first.wait().expect("reaped");
    // Started at once: the lease is still the dead process's.
    let leases = database.rows("SELECT holder FROM leases WHERE expires_at > now()");
    assert_eq!(
        leases.len(),
        1,
        "the killed run's lease is still held: {leases:?}"
    );
    let second = spawn(&workspace, &args, &state, "second.log");
    let (code, summary) = finished_summary(second);
    assert_eq!(
        code,
        Some(0),
        "{summary}\n{}",
        std::fs::read_to_string(workspace.path("second.log")).unwrap_or_default()
    );
    assert!(
        summary["rows_resumed"].as_u64().unwrap() >= 5_000,
        "it resumed: {summary}"
    );
    let log = std::fs::read_to_string(workspace.path("second.log")).unwrap();
    assert!(
        log.contains("another process holds the pipeline's lease"),
        "it waited for the lease: {log}"
    );

    let seen = sandbox.inspect();
    assert_eq!(seen.distinct_profiles, ROWS, "nothing lost");
    // Only what was in flight and settled since the last checkpoint may be sent twice.
    let duplicates = seen.profiles - seen.distinct_profiles as u64;
    assert!(
        duplicates <= (THREADS + THREADS.div_ceil(2) - 1) * 1000,
        "{duplicates} duplicates"
    );
    let runs = history(&workspace, &state);
    assert_eq!(runs[0]["resumed_from"], runs[1]["run_id"]);
    assert_eq!(runs[1]["status"], "abandoned");
}

/// A TCP proxy to the database that can cut every connection and refuse new ones for a
/// while, as a restarting server does, without touching the server other tests use.
struct Outage {
    address: String,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Outage {
    fn proxy(target: &str) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (down, open) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (is_down, streams, target) = (Arc::clone(&down), Arc::clone(&open), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if is_down.load(Ordering::SeqCst) {
                    continue; // Dropped: refused.
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut all = streams.lock().unwrap();
                all.push(client.try_clone().unwrap());
                all.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buffer = [0; 16 * 1024];
                        while let Ok(read @ 1..) = from.read(&mut buffer) {
                            if to.write_all(&buffer[..read]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Outage {
            address,
            down,
            open,
        }
    }

    /// Cuts every connection and refuses new ones until `over` holds (or fails with `what`
    /// after a minute), then accepts them again.
    fn until(&self, what: &str, over: impl FnMut() -> bool) {
        self.down.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        wait_until(60, what, over);
        self.down.store(false, Ordering::SeqCst);
    }
}

/// The test database's store, reached through an [`Outage`] proxy.
fn behind_a_proxy(database: &TestDatabase) -> (Outage, String) {
    let server = database
        .url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port in the URL")
        .to_string();
    let outage = Outage::proxy(&server);
    let state = database.state_url().replace(&server, &outage.address);
    (outage, state)
}

/// Rows the outage tests upload.
const OUTAGE_ROWS: usize = 20_000;

/// Starts `tapline run vip.yaml --json <extra>` (`vip.yaml` sending [`OUTAGE_ROWS`] profiles
/// with two threads, then `pipeline_extra`) with the store behind a proxy, and has the
/// database go away once a fifth of the rows arrived, until `over(run log, run)` holds.
/// Returns what the test checks after: the sandbox, the workspace, the store's URL, and the
/// run to wait for.
fn outage_during_a_run(
    database: &TestDatabase,
    pipeline_extra: &str,
    extra: &[&str],
    (what, mut over): (&str, impl FnMut(&str, &mut Child) -> bool),
) -> (TestSandbox, Workspace, String, Child) {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(20),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let (outage, state) = behind_a_proxy(database);
    workspace.write("vip.csv", profile_csv(OUTAGE_ROWS));
    workspace.pipeline(
        "vip",
        &sandbox,
        &format!("source: {{path: vip.csv}}\ntarget: {{entity: user_profiles}}\nthread_count: 2\n{pipeline_extra}"),
    );
    let mut args = vec!["run", "vip.yaml", "--json"];
    args.extend_from_slice(extra);
    let mut run = spawn(&workspace, &args, &state, "run.log");
    wait_until(60, "the run to be under way", || {
        sandbox.inspect().profiles >= OUTAGE_ROWS as u64 / 5
    });
    outage.until(what, || {
        let log = std::fs::read_to_string(workspace.path("run.log")).unwrap_or_default();
        over(&log, &mut run)
    });
    (sandbox, workspace, state, run)
}

#[test]
fn a_database_outage_during_a_run_loses_no_record_and_no_delivery() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    const ROWS: usize = OUTAGE_ROWS;
    // The database comes back once the run has met its absence.
    let met = |log: &str, _: &mut Child| log.contains("lost the state store's connection");
    let (sandbox, workspace, state, run) = outage_during_a_run(
        &database,
        "send: changes\n",
        &[],
        ("the run to meet the outage", met),
    );
    let (code, first) = finished_summary(run);
    let log = std::fs::read_to_string(workspace.path("run.log")).unwrap_or_default();
    assert!(
        log.contains("lost the state store's connection"),
        "the outage was met: {log}"
    );
    // The run retried its writes and finished; had it stopped, it would have said so, and
    // its checkpoint would take the next run on.
    assert_eq!(code, Some(0), "{first}\n{log}");
    assert_eq!(first["records"]["accepted"], ROWS as u64, "{first}");
    assert_eq!(sandbox.inspect().distinct_profiles, ROWS);
    // What it reported delivered is recorded: the file, and every record's fingerprint.
    let (code, again) = run_json(&workspace, &["vip.yaml", "--state", &state]);
    assert_eq!(code, Some(0), "{again}");
    assert!(
        again["up_to_date"].is_string(),
        "the delivery was recorded: {again}"
    );
    let (_, forced) = run_json(&workspace, &["vip.yaml", "--state", &state, "--force"]);
    assert_eq!(forced["records"]["unchanged"], ROWS as u64, "{forced}");
    let runs = history(&workspace, &state);
    assert_eq!(runs.last().unwrap()["records"]["accepted"], ROWS as u64);
}

#[test]
fn an_outage_longer_than_the_lease_stops_the_run_and_the_next_resumes_it() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    const ROWS: usize = OUTAGE_ROWS;
    let lease = ["--lease-seconds", "2"];
    // The database stays away until the run has given up and ended.
    let ended = |_: &str, run: &mut Child| run.try_wait().expect("wait").is_some();
    let (sandbox, workspace, state, run) =
        outage_during_a_run(&database, "", &lease, ("the run to stop", ended));
    let (code, stopped) = finished_summary(run);
    let log = std::fs::read_to_string(workspace.path("run.log")).unwrap_or_default();
    assert_eq!(code, Some(1), "{stopped}\n{log}");
    assert_ne!(stopped["status"], "succeeded", "{stopped}");
    let reason = stopped["stop_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("progress cannot be recorded in the state store"),
        "{reason}"
    );
    assert!(
        (stopped["records"]["accepted"].as_u64().unwrap()) < ROWS as u64,
        "it stopped: {stopped}"
    );
    // The next run, the database back, resumes from the checkpoint the first one wrote.
    let (code, resumed) = run_json(&workspace, &["vip.yaml", "--state", &state]);
    assert_eq!(code, Some(0), "{resumed}");
    assert_eq!(resumed["resumed_from"], stopped["run_id"], "{resumed}");
    assert!(resumed["rows_resumed"].as_u64().unwrap() > 0, "{resumed}");
    let seen = sandbox.inspect();
    assert_eq!(seen.distinct_profiles, ROWS, "nothing lost");
    let (_, again) = run_json(&workspace, &["vip.yaml", "--state", &state]);
    assert!(again["up_to_date"].is_string(), "{again}");
}

#[test]
fn rejects_files_go_to_the_rejects_dir_and_the_history_keeps_their_path() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let state = database.state_url();
    workspace.write(
        "vip.csv",
        "identity,Email\n1,not-an-email\n2,b@example.com\n",
    );
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: vip.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    // TAPLINE_STATE names the store as --state does.
    let output = tapline_with_env(
        workspace.dir.path(),
        &["run", "vip.yaml", "--json", "--rejects-dir", "out/rejects"],
        &[("TAPLINE_STATE", &state)],
    );
    let summary = summary(&output);
    let rejects = summary["rejects_file"].as_str().expect("a rejects file");
    assert!(Path::new(rejects).starts_with("out/rejects"), "{rejects}");
    assert!(workspace.path(rejects).is_file());
    let runs = history(&workspace, &state);
    assert!(
        runs[0]["rejects_file"]
            .as_str()
            .unwrap()
            .ends_with(rejects.trim_start_matches("./"))
    );
    // --state-file reads the URL from a file (a mounted secret), as --state takes it.
    workspace.write("state-url", format!("{state}\n"));
    let output = tapline(
        workspace.dir.path(),
        &["history", "--json", "--state-file", "state-url"],
    );
    let listed: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(
        listed[0]["run_id"],
        runs[0]["run_id"],
        "{}",
        stderr(&output)
    );
    // Nothing of the state is written beside the pipelines.
    assert!(!workspace.path(".tapline/state.db").exists());
    // The password never shows: a wrong one is named masked.
    let wrong = "postgres://tapline:hunter2@127.0.0.1:1/nowhere?connect_timeout=2";
    let output = tapline(workspace.dir.path(), &["run", "vip.yaml", "--state", wrong]);
    assert_ne!(output.status.code(), Some(0));
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        said.contains("postgres://tapline:***@127.0.0.1:1/nowhere"),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");
    assert!(said.contains("check the URL given with --state"), "{said}");
}
