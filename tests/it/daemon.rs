//! `tapline daemon` as a real process in a temp folder against the sandbox: fires on time,
//! follows file edits, keeps the last valid version of a broken file, never runs a pipeline
//! twice at once, shares an account's budget, talks to systemd, and stops cleanly.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

/// A daemon process, its log file, and what it told systemd (read from `NOTIFY_SOCKET` by a
/// thread, as systemd reads it: a socket nobody reads fills up).
pub(crate) struct Daemon {
    child: Child,
    log: PathBuf,
    notifications: Arc<Mutex<Vec<String>>>,
    /// Notifications already looked at by [`Daemon::notification_with`].
    seen: usize,
}

impl Daemon {
    pub(crate) fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(dir, extra, &[])
    }

    pub(crate) fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = dir.join("daemon.log");
        let socket = dir.join("notify.sock");
        let _ = std::fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket).expect("bind the notify socket");
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::clone(&notifications);
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(size) = notify.recv(&mut buffer) {
                let message = String::from_utf8_lossy(&buffer[..size]).into_owned();
                received.lock().unwrap().push(message);
            }
        });
        let default_dir: &[&str] = if extra.contains(&"--dir") {
            &[]
        } else {
            &["--dir", "."]
        };
        // `TAPLINE_TEST_FD_LIMIT` runs it under that limit of open files, through the shell.
        let fd_limit = env
            .iter()
            .find(|(name, _)| *name == "TAPLINE_TEST_FD_LIMIT")
            .map(|(_, limit)| *limit);
        let mut command = match fd_limit {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_tapline"),
                ]);
                shell
            }
            None => Command::new(env!("CARGO_BIN_EXE_tapline")),
        };
        let child = command
            .arg("daemon")
            .args(default_dir)
            .args(extra)
            .current_dir(dir)
            .env("NOTIFY_SOCKET", &socket)
            .env("TAPLINE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the daemon starts");
        Daemon {
            child,
            log,
            notifications,
            seen: 0,
        }
    }

    /// Waits for a notification (after those seen so far) that contains `wanted`; returns
    /// the new ones up to it.
    pub(crate) fn notification_with(&mut self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.notifications.lock().unwrap().clone();
            if let Some(found) = all[self.seen..].iter().position(|m| m.contains(wanted)) {
                let new = all[self.seen..=self.seen + found].to_vec();
                self.seen += found + 1;
                return new;
            }
            assert!(
                Instant::now() < deadline,
                "no {wanted:?} from the daemon; it said {all:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        // SAFETY-free: kill(1) rather than libc, to keep the tests free of unsafe code.
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn stop(mut self) -> Option<i32> {
        self.signal(15);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Waits until `condition` holds, or fails with `what` and the daemon's log after
    /// `seconds`: a deadline for a busy machine, never a measure of speed.
    pub(crate) fn wait_for(&self, seconds: u64, what: &str, condition: impl FnMut() -> bool) {
        wait_until_or_show(seconds, what, condition, || {
            format!("the daemon's log:\n{}", self.log())
        });
    }
}

/// A loopback address with a port nobody listens on (for the daemon's metrics).
fn free_loopback_address() -> String {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    free.local_addr().unwrap().to_string()
}

pub(crate) fn history(dir: &Path) -> Vec<Value> {
    let output = tapline(dir, &["history", "--dir", ".", "--json", "--limit", "1000"]);
    serde_json::from_str::<Value>(&stdout(&output))
        .ok()
        .and_then(|runs| runs.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn fires_on_time_and_follows_edits_breakage_removal_and_signals() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    let mut daemon = Daemon::start(dir, &[]);
    let ready = daemon.notification_with("READY=1");
    assert!(
        ready.concat().contains("STATUS=0 pipelines scheduled"),
        "{ready:?}"
    );

    // A new file is scheduled: every second, sending the file each time.
    let body = "source: {path: events.csv}\ntarget: {entity: user_events}\nrerun: always\nschedule: {cron: \"* * * * * *\"}\n";
    workspace.pipeline("every_second", &sandbox, body);
    daemon.wait_for(30, "three fires", || sandbox.inspect().events >= 3);
    // One run per fire: each in a second of its own. (How late after its second a run
    // starts depends on how busy the machine is; the daemon benchmark measures it.)
    let runs = history(dir);
    assert!(runs.len() >= 3);
    let mut seconds: Vec<i64> = runs
        .iter()
        .map(|run| run["started_at_ms"].as_i64().unwrap() / 1000)
        .collect();
    seconds.dedup();
    assert_eq!(seconds.len(), runs.len(), "two runs of one fire: {runs:?}");
    assert!(
        runs.iter().all(|run| run["trigger"] == "schedule"),
        "{runs:?}"
    );

    // An edit takes effect: the pipeline now reads another file.
    workspace.write("other.csv", "identity,evtName\nu2,Purchased\n");
    workspace.pipeline(
        "every_second",
        &sandbox,
        &body.replace("events.csv", "other.csv"),
    );
    daemon.wait_for(30, "a run of the edited pipeline", || {
        sandbox
            .sandbox
            .records("event")
            .iter()
            .any(|record| record["evtName"] == "Purchased")
    });

    // A broken edit is logged with its line and column; the last valid version keeps running.
    let valid = body.replace("events.csv", "other.csv");
    workspace.pipeline(
        "every_second",
        &sandbox,
        &format!("{valid}thread_count: 99\n"),
    );
    // The error and the note that follows it are two log lines: wait for the second.
    daemon.wait_for(30, "the broken edit in the log", || {
        daemon
            .log()
            .contains("its last valid version stays scheduled")
    });
    let log = daemon.log();
    assert!(log.contains("every_second.yaml:10:15: error"), "{log}");
    assert!(log.contains("thread_count"), "{log}");
    let before = sandbox.inspect().events;
    daemon.wait_for(30, "runs of the last valid version", || {
        sandbox.inspect().events >= before + 2
    });

    // SIGHUP reloads, telling systemd.
    daemon.signal(1);
    let reload = daemon.notification_with("READY=1");
    assert!(reload.concat().contains("RELOADING=1"), "{reload:?}");

    // A removed file is unscheduled.
    std::fs::remove_file(workspace.path("every_second.yaml")).unwrap();
    daemon.wait_for(30, "the removal in the log", || {
        daemon.log().contains("pipeline file removed: unscheduled")
    });
    let removed_runs = || {
        history(dir)
            .iter()
            .filter(|run| run["pipeline"] == "every_second")
            .count()
    };
    // A run already started when the file went may still end; none starts after it.
    daemon.wait_for(30, "the last run of the removed pipeline to end", || {
        history(dir).iter().all(|run| run["status"] != "running")
    });
    let after_removal = removed_runs();
    // Another pipeline firing twice shows the scheduler went on without the removed one.
    workspace.write("marker.csv", "identity,evtName\nm1,Marker\n");
    workspace.pipeline(
        "marker",
        &sandbox,
        &body.replace("events.csv", "marker.csv"),
    );
    daemon.wait_for(30, "two runs of another pipeline", || {
        history(dir)
            .iter()
            .filter(|run| run["pipeline"] == "marker" && run["status"] == "succeeded")
            .count()
            >= 2
    });
    assert_eq!(removed_runs(), after_removal, "no run after removal");

    let log = daemon.log();
    let code = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_long_run_is_not_started_twice_and_sigterm_loses_nothing() {
    // 12 rounds of two requests at 400 ms: the run is still going when SIGTERM comes
    // (about 1 s after the start) and when its second of grace ends.
    const ROWS: usize = 24_000;
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(400),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    workspace.write("profiles.csv", profile_csv(ROWS));
    workspace.pipeline(
        "slow",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 2\nschedule: {cron: \"* * * * * *\"}\n",
    );
    let mut daemon = Daemon::start(dir, &["--shutdown-timeout", "1"]);
    daemon.notification_with("READY=1");
    daemon.wait_for(30, "a skipped fire", || {
        daemon
            .log()
            .contains("fire skipped: the previous run is still going")
    });
    // SIGTERM mid-run: the upload gets a second of grace, then stops and keeps its checkpoint.
    let notifications = Arc::clone(&daemon.notifications);
    let log = daemon.log();
    assert_eq!(daemon.stop(), Some(0), "{log}");
    assert!(
        notifications
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("STOPPING=1")),
        "systemd was told of the shutdown"
    );
    let seen = sandbox.inspect();
    assert!(
        seen.max_in_flight_by_api.values().all(|most| *most <= 2),
        "one run at a time, two requests each: {:?}",
        seen.max_in_flight_by_api
    );
    let runs = history(dir);
    assert!(
        runs.iter().all(|run| run["status"] != "running"),
        "{runs:?}"
    );

    // Nothing lost: a manual run finishes the file from the checkpoint.
    let output = tapline(dir, &["run", "slow.yaml", "--json"]);
    let last = summary(&output);
    assert_eq!(output.status.code(), Some(0), "{last}");
    assert_eq!(sandbox.inspect().distinct_profiles, ROWS);
    assert!(last["rows_resumed"].as_u64() > Some(0), "{last}");
}

#[test]
fn pipelines_on_one_account_never_exceed_its_budget() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    // Five rounds of 300 ms each: long enough that the two runs overlap.
    workspace.write("profiles.csv", profile_csv(50_000));
    workspace.write(
        "events.csv",
        (0..50_000).fold(String::from("identity,evtName\n"), |mut csv, i| {
            csv.push_str(&format!("u{i},Viewed\n"));
            csv
        }),
    );
    // Both fire at the same seconds, each wanting 10 requests in flight: 20 > 15.
    let schedule = "schedule: {cron: \"*/2 * * * * *\"}\n";
    workspace.pipeline(
        "profiles",
        &sandbox,
        &format!("source: {{path: profiles.csv}}\ntarget: {{entity: user_profiles}}\nthread_count: 10\n{schedule}"),
    );
    workspace.pipeline(
        "events",
        &sandbox,
        &format!("source: {{path: events.csv}}\ntarget: {{entity: user_events}}\nthread_count: 10\n{schedule}"),
    );
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    daemon.wait_for(30, "both uploads", || {
        let seen = sandbox.inspect();
        seen.profiles >= 50_000 && seen.events >= 50_000
    });
    let seen = sandbox.inspect();
    let most = seen
        .max_in_flight_by_api
        .values()
        .max()
        .copied()
        .unwrap_or(0);
    assert!(most <= 15, "{most} requests in flight on one account");
    assert!(
        most > 10,
        "the two pipelines ran at once ({most} in flight)"
    );
    assert_eq!(seen.throttled, 0, "CleverTap never had to answer 429");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn auto_runs_on_one_account_share_its_limit_and_never_pass_it() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    workspace.write("profiles.csv", profile_csv(30_000));
    workspace.write(
        "events.csv",
        (0..30_000).fold(String::from("identity,evtName\n"), |mut csv, i| {
            csv.push_str(&format!("u{i},Viewed\n"));
            csv
        }),
    );
    // The account lets tapline have 6 uploads in flight; both pipelines adapt, at once.
    let connection = format!(
        "{}  limits: {{concurrency: 6}}\n",
        sandbox.connection_yaml()
    );
    let schedule = "schedule: {cron: \"*/2 * * * * *\"}\n";
    workspace.write(
        "profiles.yaml",
        format!("{connection}source: {{path: profiles.csv}}\ntarget: {{entity: user_profiles}}\nthread_count: auto\n{schedule}"),
    );
    workspace.write(
        "events.yaml",
        format!("{connection}source: {{path: events.csv}}\ntarget: {{entity: user_events}}\nthread_count: auto\n{schedule}"),
    );
    let address = free_loopback_address();
    let mut daemon = Daemon::start(dir, &["--listen", &address]);
    daemon.notification_with("READY=1");
    daemon.wait_for(60, "both uploads", || {
        let seen = sandbox.inspect();
        seen.profiles >= 30_000 && seen.events >= 30_000
    });
    let seen = sandbox.inspect();
    let most = seen
        .max_in_flight_by_api
        .values()
        .max()
        .copied()
        .unwrap_or(0);
    assert!(
        most <= 6,
        "{most} requests in flight on an account that allows 6"
    );
    assert_eq!(seen.throttled, 0);
    let metrics = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).expect("the listener");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(
        metrics.contains("tapline_concurrency_limit{account=\"TAPLINE-SANDBOX@"),
        "{metrics}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_missed_fire_is_caught_up_at_start_when_asked() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    // Every 4 seconds; the daemon is down for longer than that in between.
    workspace.pipeline(
        "catch",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\nrerun: always\nschedule: {cron: \"*/4 * * * * *\", catch_up: latest}\n",
    );
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    daemon.wait_for(30, "a first fire", || sandbox.inspect().events >= 1);
    assert_eq!(daemon.stop(), Some(0));
    let events = sandbox.inspect().events;
    std::thread::sleep(Duration::from_millis(4500));

    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    // The catch-up run starts before READY: at once, not at the next fire.
    daemon.wait_for(30, "the catch-up run", || sandbox.inspect().events > events);
    assert!(daemon.log().contains("catching up a fire missed"));
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn next_prints_fire_times_in_each_zone() {
    let workspace = Workspace::new();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    workspace.write(
        "nightly.yaml",
        "connection: {account_id: A, passcode_file: p}\nsource: {path: events.csv}\ntarget: {entity: user_events}\nschedule: {cron: \"0 3 * * MON-FRI\", timezone: Asia/Kolkata}\n",
    );
    workspace.write(
        "manual.yaml",
        "connection: {account_id: A, passcode_file: p}\nsource: {path: events.csv}\ntarget: {entity: user_events}\n",
    );
    let output = tapline(
        workspace.dir.path(),
        &["next", "--dir", ".", "--count", "2"],
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(text.contains("manual: no schedule"), "{text}");
    assert!(
        text.contains("nightly: `0 3 * * MON-FRI` in Asia/Kolkata"),
        "{text}"
    );
    assert_eq!(text.matches("03:00:00 IST").count(), 2, "{text}");
}

#[test]
fn metrics_health_watchdog_and_json_logs() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\nu2,\n");
    workspace.pipeline(
        "tick",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\nskip_invalid_records: true\nrerun: always\nschedule: {cron: \"* * * * * *\"}\n",
    );
    let address = free_loopback_address();
    // systemd sets WATCHDOG_USEC when the unit has WatchdogSec=.
    let mut daemon = Daemon::start_with_env(
        dir,
        &["--metrics-listen", &address, "--log-format", "json"],
        &[("WATCHDOG_USEC", "400000")],
    );
    daemon.notification_with("READY=1");
    daemon.notification_with("WATCHDOG=1");
    // Finished, as the daemon sees it (the sandbox has the events before the run ends).
    daemon.wait_for(30, "two finished runs", || {
        daemon.log().matches("\"run finished\"").count() >= 2
    });

    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).expect("the metrics server");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    };
    assert_eq!(get("/health"), "ok\n");
    let metrics = get("/metrics");
    assert!(
        metrics.contains("tapline_pipelines_scheduled 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tapline_runs_total{pipeline=\"tick\",status=\"succeeded\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tapline_records_total{pipeline=\"tick\",outcome=\"skipped\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("tapline_last_success_timestamp_seconds{pipeline=\"tick\"}"));
    assert!(
        metrics.contains("tapline_requests_in_flight{account="),
        "{metrics}"
    );

    // Logs are JSON lines with the pipeline and run ID as fields.
    let log = daemon.log();
    let finished: Value = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "run finished")
        .unwrap_or_else(|| panic!("no JSON `run finished` line in:\n{log}"));
    assert_eq!(finished["pipeline"], "tick");
    assert!(finished["run_id"].as_str().is_some());
    assert!(
        !log.contains("\u{1b}["),
        "no colours when stderr is not a terminal"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn each_file_that_arrives_is_sent_once() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    std::fs::create_dir(dir.join("exports")).unwrap();
    // One file was there before the daemon started.
    workspace.write("exports/vip_1.csv", "identity,Name\nu1,One\n");
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: \"exports/vip_*.csv\"}\ntarget: {entity: user_profiles}\ntrigger: file_arrival\n",
    );
    let validate = tapline(dir, &["validate", "vip.yaml"]);
    assert_eq!(validate.status.code(), Some(0), "{}", stderr(&validate));
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    daemon.wait_for(30, "the file that was there", || {
        sandbox.inspect().profiles == 1
    });

    // An exporter writes a file under a temporary name, then renames it into place.
    workspace.write(
        "exports/.vip_2.csv.tmp",
        "identity,Name\nu2,Two\nu3,Three\n",
    );
    std::fs::rename(
        dir.join("exports/.vip_2.csv.tmp"),
        dir.join("exports/vip_2.csv"),
    )
    .unwrap();
    // Another writes in place: it is sent once it has been quiet for a second.
    workspace.write("exports/vip_3.csv", "identity,Name\nu4,Four\n");
    daemon.wait_for(30, "both new files", || sandbox.inspect().profiles == 4);
    // A file that does not match is not sent.
    workspace.write("exports/other.csv", "identity,Name\nx,X\n");
    // A later file that matches is sent: by then the one that does not was looked at.
    workspace.write("exports/vip_4.csv", "identity,Name\nu5,Five\n");
    daemon.wait_for(30, "the fourth file", || sandbox.inspect().profiles == 5);
    assert!(sandbox.sandbox.profile("x").is_none());
    assert_eq!(daemon.stop(), Some(0));

    // After a restart, nothing that arrived is sent again: only a new file is.
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    workspace.write("exports/vip_5.csv", "identity,Name\nu6,Six\n");
    daemon.wait_for(30, "the file that arrived after the restart", || {
        history(dir).len() == 5 && history(dir).iter().all(|run| run["status"] != "running")
    });
    assert_eq!(sandbox.inspect().profiles, 6);
    assert!(sandbox.sandbox.profile("x").is_none());
    let runs = history(dir);
    assert_eq!(runs.len(), 5, "{runs:?}");
    assert!(runs.iter().all(|run| run["trigger"] == "file_arrival"));
    assert_eq!(daemon.stop(), Some(0));

    // `tapline run` goes over every matching file: all are delivered already.
    let output = tapline(dir, &["run", "vip.yaml", "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(
        lines.iter().all(|line| line["up_to_date"].is_string()),
        "{lines:?}"
    );
}

#[test]
fn wildcards_need_the_file_arrival_trigger() {
    let workspace = Workspace::new();
    workspace.write(
        "vip.yaml",
        "connection: {account_id: A, passcode_file: p}\nsource: {path: \"exports/vip_*.csv\"}\ntarget: {entity: user_profiles}\n",
    );
    workspace.write(
        "both.yaml",
        "connection: {account_id: A, passcode_file: p}\nsource: {path: \"ex*/vip_*.csv\"}\ntarget: {entity: user_profiles}\ntrigger: file_arrival\nschedule: {cron: \"@daily\"}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "vip.yaml", "both.yaml"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        errors.contains("vip.yaml:2:16: error: `exports/vip_*.csv` has wildcards"),
        "{errors}"
    );
    assert!(errors.contains("add `trigger: file_arrival`"), "{errors}");
    assert!(
        errors.contains(
            "both.yaml:5:1: error: a `trigger: file_arrival` pipeline runs when files arrive"
        ),
        "{errors}"
    );
    assert!(errors.contains("only the file name may hold"), "{errors}");

    // `poll_seconds` belongs to `file_arrival`, within its bounds.
    workspace.write(
        "polled.yaml",
        "connection: {account_id: A, passcode_file: p}\nsource: {path: users.csv, poll_seconds: 30}\ntarget: {entity: user_profiles}\n",
    );
    workspace.write(
        "never.yaml",
        "connection: {account_id: A, passcode_file: p}\nsource: {path: \"s3://drops/in/*.csv\", poll_seconds: 0}\ntarget: {entity: user_profiles}\ntrigger: file_arrival\n",
    );
    let output = tapline(
        workspace.dir.path(),
        &["validate", "polled.yaml", "never.yaml"],
    );
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{errors}");
    assert!(
        errors.contains("polled.yaml:2:27: error: `poll_seconds` says how often files are looked for, and this pipeline runs on a schedule"),
        "{errors}"
    );
    assert!(
        errors.contains("never.yaml:2:53: error: `source.poll_seconds` is 0, below the minimum 1"),
        "{errors}"
    );
}

#[test]
fn a_queued_fire_runs_right_after_the_run_it_waited_for() {
    // Three requests one after another, each answered a second after it arrives: a run
    // lasts at least three seconds however fast the machine is, and fires come every second.
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_secs(1),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    workspace.write("profiles.csv", profile_csv(3000));
    workspace.pipeline(
        "queued",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\nrerun: always\nschedule: {cron: \"* * * * * *\", overlap: queue}\n",
    );
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    daemon.wait_for(60, "a queued fire", || daemon.log().contains("fire queued"));
    daemon.wait_for(60, "the queued fire to start", || {
        daemon.log().contains("starting the queued fire")
    });
    daemon.wait_for(60, "two finished runs", || {
        history(dir)
            .iter()
            .filter(|run| run["status"] == "succeeded")
            .count()
            >= 2
    });
    assert_eq!(daemon.stop(), Some(0));
    let mut runs: Vec<Value> = history(dir)
        .into_iter()
        .filter(|run| run["finished_at_ms"].is_i64())
        .collect();
    runs.sort_by_key(|run| run["started_at_ms"].as_i64());
    let gaps: Vec<i64> = runs
        .windows(2)
        .map(|pair| {
            pair[1]["started_at_ms"].as_i64().unwrap() - pair[0]["finished_at_ms"].as_i64().unwrap()
        })
        .collect();
    assert!(
        gaps.iter().all(|gap| *gap >= 0),
        "runs overlapped: {gaps:?}"
    );
}

#[test]
fn a_connections_file_change_applies_to_its_pipelines() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("passcode.txt", tapline::sandbox::DEFAULT_PASSCODE);
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    let connection = |account: &str| {
        format!(
            "prod:\n  account_id: {account}\n  passcode_file: passcode.txt\n  endpoint: {}\n",
            sandbox.sandbox.base_url()
        )
    };
    // A wrong account ID: CleverTap (the sandbox) refuses every run.
    workspace.write("connections.yaml", connection("WRONG-ACCOUNT"));
    workspace.write(
        "events.yaml",
        "connection: prod\nsource: {path: events.csv}\ntarget: {entity: user_events}\nrerun: always\nschedule: {cron: \"* * * * * *\"}\n",
    );
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    daemon.wait_for(30, "a refused run", || sandbox.inspect().unauthorized > 0);
    assert_eq!(sandbox.inspect().events, 0);

    let (account, _) = sandbox.sandbox.credentials();
    workspace.write("connections.yaml", connection(account));
    daemon.wait_for(30, "runs with the fixed connection", || {
        sandbox.inspect().events > 0
    });
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn journald_logging_falls_back_to_stderr_without_a_journal() {
    if Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("skipped: this machine has a journal");
        return;
    }
    let workspace = Workspace::new();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    workspace.write(
        "events.yaml",
        "connection: {account_id: A, passcode_file: p}\nsource: {path: events.csv}\ntarget: {entity: user_events}\nschedule: {cron: \"@daily\"}\n",
    );
    let output = tapline_with_env(
        workspace.dir.path(),
        &["next", "--dir", ".", "--log-format", "journald"],
        &[("TAPLINE_LOG", "warn")],
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(stderr(&output).contains("no systemd journal; logging to stderr"));
    assert!(stdout(&output).contains("events: `@daily` in UTC"));
}

#[test]
fn an_arrived_file_whose_run_was_interrupted_resumes_at_the_next_start() {
    // Twenty requests of 300 ms one after another: each run is still going when it is
    // killed or stopped.
    const ROWS: usize = 20_000;
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    std::fs::create_dir(dir.join("exports")).unwrap();
    workspace.pipeline(
        "vip",
        &sandbox,
        "source: {path: \"exports/vip_*.csv\"}\ntarget: {entity: user_profiles}\nthread_count: 1\ntrigger: file_arrival\n",
    );
    let resumed_runs = || {
        history(dir)
            .into_iter()
            .filter(|run| run["status"] == "succeeded" && run["rows_resumed"].as_u64() > Some(0))
            .count()
    };

    // kill -9 in the middle of the first file.
    workspace.write("exports/vip_1.csv", profile_csv(ROWS));
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    daemon.wait_for(60, "part of the first file", || {
        sandbox.inspect().profiles >= 3000
    });
    drop(daemon);
    // No grace at SIGTERM (below): running uploads are interrupted at once.
    let mut daemon = Daemon::start(dir, &["--shutdown-timeout", "0"]);
    daemon.notification_with("READY=1");
    daemon.wait_for(120, "the rest of the first file", || resumed_runs() == 1);
    assert_eq!(sandbox.inspect().distinct_profiles, ROWS);
    let runs = history(dir);
    assert!(
        runs.iter().any(|run| run["status"] == "abandoned"),
        "the killed run is marked abandoned: {runs:?}"
    );

    // SIGTERM in the middle of the second file: the run is interrupted.
    let second = profile_csv(ROWS * 2).lines().skip(ROWS + 1).fold(
        String::from("identity,Name,Email,Phone,Gender,Age,Score\n"),
        |mut csv, line| {
            csv.push_str(line);
            csv.push('\n');
            csv
        },
    );
    let before = sandbox.inspect().profiles;
    workspace.write("exports/vip_2.csv", second);
    daemon.wait_for(60, "part of the second file", || {
        sandbox.inspect().profiles >= before + 3000
    });
    assert_eq!(daemon.stop(), Some(0));
    let runs = history(dir);
    assert!(
        runs.iter().any(|run| run["status"] == "interrupted"),
        "{runs:?}"
    );
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    daemon.wait_for(120, "the rest of the second file", || resumed_runs() == 2);
    assert_eq!(sandbox.inspect().distinct_profiles, 2 * ROWS);
    assert!(history(dir).iter().all(|run| run["status"] != "running"));
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_pipelines_folder_deleted_made_again_or_swapped_is_watched_again() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    let pipeline = |folder: &str, name: &str| {
        workspace.write(
            &format!("{folder}/{name}.yaml"),
            format!(
                "{}source: {{path: ../events.csv}}\ntarget: {{entity: user_events}}\nrerun: always\nschedule: {{cron: \"* * * * * *\"}}\n",
                sandbox.connection_yaml().replace("passcode.txt", "../passcode.txt")
            ),
        );
    };
    let runs_of = |name: &str| {
        let output = tapline(
            dir,
            &[
                "history",
                "--state-dir",
                "state",
                "--json",
                "--limit",
                "1000",
            ],
        );
        serde_json::from_str::<Value>(&stdout(&output))
            .ok()
            .and_then(|runs| runs.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|run| run["pipeline"] == name)
            .collect::<Vec<_>>()
    };
    let finished_runs = |name: &str| {
        runs_of(name)
            .iter()
            .filter(|run| run["status"] != "running")
            .count()
    };
    pipeline("pipelines", "first");
    let mut daemon = Daemon::start(dir, &["--dir", "pipelines", "--state-dir", "state"]);
    daemon.notification_with("READY=1");
    daemon.wait_for(30, "a run of the first pipeline", || {
        finished_runs("first") >= 1
    });

    // Deleted: its pipelines are unscheduled.
    std::fs::remove_dir_all(dir.join("pipelines")).unwrap();
    daemon.wait_for(30, "the folder's removal in the log", || {
        daemon.log().contains("the pipelines folder is gone")
            && daemon.log().contains("pipeline file removed: unscheduled")
    });
    daemon.wait_for(30, "the last run of the first pipeline to end", || {
        runs_of("first")
            .iter()
            .all(|run| run["status"] != "running")
    });
    let first_runs = runs_of("first").len();

    // Made again with another pipeline: watched again, and the new pipeline runs.
    pipeline("pipelines", "second");
    daemon.wait_for(30, "two runs of the second pipeline", || {
        finished_runs("second") >= 2
    });
    assert!(daemon.log().contains("the pipelines folder was replaced"));
    assert_eq!(
        runs_of("first").len(),
        first_runs,
        "the deleted pipeline never ran again"
    );

    // Swapped with `mv`, as deploy tools do: the new folder's pipelines run, the old ones stop.
    pipeline("pipelines.new", "third");
    std::fs::rename(dir.join("pipelines"), dir.join("pipelines.old")).unwrap();
    std::fs::rename(dir.join("pipelines.new"), dir.join("pipelines")).unwrap();
    daemon.wait_for(30, "two runs of the third pipeline", || {
        finished_runs("third") >= 2
    });
    daemon.wait_for(30, "the last run of the second pipeline to end", || {
        runs_of("second")
            .iter()
            .all(|run| run["status"] != "running")
    });
    let second_runs = runs_of("second").len();
    // Edits in the new folder are seen.
    pipeline("pipelines", "fourth");
    daemon.wait_for(30, "two runs of a pipeline added after the swap", || {
        finished_runs("fourth") >= 2
    });
    assert_eq!(
        runs_of("second").len(),
        second_runs,
        "the swapped-out pipeline never ran again"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn idle_metrics_connections_cannot_starve_the_runs_of_file_descriptors() {
    // The daemon may open 256 files; the test holds 400 idle connections to its metrics.
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    workspace.pipeline(
        "tick",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\nrerun: always\nschedule: {cron: \"* * * * * *\"}\n",
    );
    let address = free_loopback_address();
    let mut daemon = Daemon::start_with_env(
        dir,
        &["--metrics-listen", &address],
        &[("TAPLINE_TEST_FD_LIMIT", "256")],
    );
    daemon.notification_with("READY=1");
    let socket: std::net::SocketAddr = address.parse().unwrap();
    let idle: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() >= 300, "only {} connections made", idle.len());
    let succeeded = || {
        history(dir)
            .iter()
            .filter(|run| run["status"] == "succeeded")
            .count()
    };
    let before = succeeded();
    daemon.wait_for(60, "three runs while the connections are held", || {
        succeeded() >= before + 3
    });
    let log = daemon.log();
    assert!(!log.contains("unable to open"), "{log}");
    assert!(!log.contains("run failed"), "{log}");
    drop(idle);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn the_daemon_tries_schedules_on_its_own_sandbox_and_logs_in_each_zone() {
    // No connection can be reached and no secret is set: `--sandbox` needs neither.
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    workspace.write(
        "connections.yaml",
        "prod:\n  account_id: ${TAPLINE_TEST_UNSET_ACCOUNT}\n  passcode: ${TAPLINE_TEST_UNSET_PASSCODE}\n",
    );
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    let pipeline = "connection: prod\nsource: {path: events.csv}\ntarget: {entity: user_events}\nrerun: always\nschedule: {cron: \"* * * * * *\", timezone: Asia/Kolkata}\n";
    workspace.write("events.yaml", pipeline);
    let mut daemon = Daemon::start(dir, &["--sandbox"]);
    daemon.notification_with("READY=1");
    daemon.wait_for(30, "a run on the sandbox", || {
        history(dir).iter().any(|run| run["status"] == "succeeded")
    });
    // The history says where the runs went.
    assert!(
        history(dir)
            .iter()
            .all(|run| run["destination"] == "sandbox"),
        "{:?}",
        history(dir)
    );
    let log = daemon.log();
    assert!(
        log.contains("sending every pipeline to the built-in sandbox"),
        "{log}"
    );
    // Fire times read as the schedule does: its zone, with the offset.
    assert!(
        log.lines()
            .any(|line| line.contains("pipeline scheduled") && line.contains("IST (+05:30)")),
        "{log}"
    );

    // A broken edit, then the fix: the daemon says when the file is valid again.
    workspace.write(
        "events.yaml",
        "connection: prod\nsource: {path: events.csv}\ntarget: {entity: user_event}\n",
    );
    daemon.wait_for(30, "the broken edit", || {
        daemon
            .log()
            .contains("its last valid version stays scheduled")
    });
    workspace.write("events.yaml", pipeline);
    daemon.wait_for(30, "the fixed file", || {
        daemon.log().contains("the file is valid again")
    });
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn parquet_and_zstd_files_that_arrive_are_sent() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    std::fs::create_dir(dir.join("drops")).unwrap();
    workspace.pipeline(
        "columns",
        &sandbox,
        "source: {path: \"drops/*.parquet\"}\ntarget: {entity: user_profiles}\ntrigger: file_arrival\n",
    );
    workspace.pipeline(
        "lines",
        &sandbox,
        "source: {path: \"drops/*.jsonl.zst\"}\ntarget: {entity: user_profiles}\ntrigger: file_arrival\n",
    );
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    let parquet = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/types.parquet"
    ))
    .unwrap();
    workspace.write("drops/.types.tmp", parquet);
    std::fs::rename(
        dir.join("drops/.types.tmp"),
        dir.join("drops/types.parquet"),
    )
    .unwrap();
    let lines =
        zstd::encode_all(&b"{\"identity\": \"z1\"}\n{\"identity\": \"z2\"}\n"[..], 3).unwrap();
    workspace.write("drops/.lines.tmp", lines);
    std::fs::rename(
        dir.join("drops/.lines.tmp"),
        dir.join("drops/lines.jsonl.zst"),
    )
    .unwrap();
    daemon.wait_for(30, "the four Parquet rows and the two lines", || {
        sandbox.inspect().profiles == 6
    });
    assert!(sandbox.sandbox.profile("p4").is_some());
    assert!(sandbox.sandbox.profile("z2").is_some());
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_damaged_parquet_file_fails_its_run_and_the_next_file_is_sent() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    std::fs::create_dir(dir.join("drops")).unwrap();
    workspace.pipeline(
        "columns",
        &sandbox,
        "source: {path: \"drops/*.parquet\"}\ntarget: {entity: user_profiles}\ntrigger: file_arrival\n",
    );
    let mut daemon = Daemon::start(dir, &[]);
    daemon.notification_with("READY=1");
    damaged_parquet(&dir.join("drops/.a.tmp"));
    std::fs::rename(dir.join("drops/.a.tmp"), dir.join("drops/a.parquet")).unwrap();
    daemon.wait_for(30, "the damaged file's failed run", || {
        history(dir).iter().any(|run| run["status"] == "failed")
    });
    write_parquet(
        &dir.join("drops/.b.tmp"),
        "message m { required binary identity (UTF8); }",
        &[texts(&["good-1", "good-2"])],
    );
    std::fs::rename(dir.join("drops/.b.tmp"), dir.join("drops/b.parquet")).unwrap();
    daemon.wait_for(30, "the good file that came next", || {
        sandbox.inspect().profiles == 2
    });
    let failed = history(dir)
        .into_iter()
        .find(|run| run["status"] == "failed")
        .unwrap();
    assert!(
        failed["stop_reason"]
            .to_string()
            .contains("a.parquet` cannot be read past row 0"),
        "{failed}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn health_says_whether_the_daemon_can_do_its_work() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    let address = free_loopback_address();
    let health = || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).expect("the metrics server");
        write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split(' ').nth(1).unwrap_or_default().to_string();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    };
    let mut daemon = Daemon::start(dir, &["--metrics-listen", &address]);
    daemon.notification_with("READY=1");
    let (status, body) = health();
    assert_eq!(status, "503", "{body}");
    assert!(body.contains("no pipeline is loaded"), "{body}");

    workspace.write("people.csv", "identity\nu1\n");
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\nschedule: {cron: \"0 0 1 1 *\"}\n",
    );
    daemon.wait_for(30, "a healthy daemon once a pipeline loads", || {
        health() == ("200".to_string(), "ok\n".to_string())
    });

    // The state store becomes unusable: a file where its folder was.
    std::fs::remove_dir_all(dir.join(".tapline")).unwrap();
    std::fs::write(dir.join(".tapline"), "not a folder").unwrap();
    let (status, body) = health();
    assert_eq!(status, "503", "{body}");
    assert!(body.contains("the state store cannot be used"), "{body}");
    assert_eq!(daemon.stop(), Some(0));
}
