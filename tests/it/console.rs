//! The web console (`tapline ui`, `tapline daemon --listen`): pages and JSON API over a real
//! state store after real runs to the sandbox, escaping, the token, and the daemon's listener.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tapline::sandbox::SandboxConfig;

use crate::common::{self, TestSandbox, Workspace, run_json};

/// A `tapline ui` process, stopped when dropped.
struct Ui {
    child: Child,
    /// `127.0.0.1:PORT`.
    address: String,
}

impl Ui {
    /// Starts `tapline ui --dir . --listen 127.0.0.1:0 <extra>` in `dir` (`--dir` as `extra`
    /// says, when it does) and waits for the line that says where it listens.
    fn start(dir: &Path, extra: &[&str]) -> Ui {
        let folder: &[&str] = if extra.contains(&"--dir") {
            &[]
        } else {
            &["--dir", "."]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapline"))
            .current_dir(dir)
            .args(["ui", "--listen", "127.0.0.1:0"])
            .args(folder)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tapline ui");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the first line");
        let Some(address) = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
        else {
            let mut stderr = String::new();
            let _ = child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!("tapline ui did not say where it listens: {line:?} {stderr}");
        };
        Ui {
            address: address.to_string(),
            child,
        }
    }
}

/// A `tapline daemon --listen 127.0.0.1:0 <extra>` process, stopped when dropped.
pub(crate) struct DaemonProcess {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) address: String,
}

impl DaemonProcess {
    /// Starts the daemon on the folder of `workspace` and waits until its console answers
    /// and its pipelines are loaded.
    pub(crate) fn start(workspace: &Workspace, extra: &[&str]) -> DaemonProcess {
        let log = workspace.path("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tapline"))
            .current_dir(workspace.dir.path())
            .args(["daemon", "--dir", ".", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the daemon");
        let mut address = String::new();
        common::wait_until(60, "the daemon says where the console is", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split("the console is at http://").nth(1) {
                address = rest.split('/').next().unwrap_or_default().to_string();
            }
            !address.is_empty()
        });
        common::wait_until(60, "the daemon loads its pipelines", || {
            get(&address, "/health", None).body == "ok\n"
        });
        DaemonProcess { child, address }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: status code, headers (lowercase names) and body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

/// `GET path` on `address`, with an `Authorization` header when given.
fn get(address: &str, path: &str, authorization: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    request(address, "GET", path, &headers)
}

/// `METHOD path` on `address` with `headers`, and its answer.
pub(crate) fn request(address: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the console");
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let length = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{headers}{length}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

fn json(answer: &Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap_or_else(|error| panic!("{error}: {}", answer.body))
}

/// A folder with a scheduled events pipeline whose description is markup, after one run in
/// which CleverTap refused two records, and a file that does not load.
pub(crate) fn runs_with_refusals(sandbox: &TestSandbox) -> (Workspace, Value) {
    let workspace = Workspace::new();
    let mut csv = String::from("identity,evtName,ts\n");
    for i in 0..30 {
        let name = if i == 7 || i == 20 {
            "Old Promo"
        } else {
            "Viewed"
        };
        csv.push_str(&format!("u{i},{name},1764300000\n"));
    }
    workspace.write("events.csv", csv);
    workspace.pipeline(
        "events",
        sandbox,
        "description: \"<img src=x onerror=alert(1)>\"\nsource: {path: events.csv}\ntarget: {entity: user_events}\nskip_invalid_records: true\nschedule: {cron: \"0 3 * * *\", timezone: Asia/Kolkata}\n",
    );
    let (code, summary) = run_json(&workspace, &["events.yaml"]);
    assert_eq!(code, Some(1), "{summary}");
    workspace.write(
        "broken.yaml",
        "source: {path: x.csv}\ntarget: {entity: nobody}\n",
    );
    (workspace, summary)
}

#[test]
fn the_console_shows_pipelines_next_fires_runs_and_why_records_were_refused() {
    let sandbox = TestSandbox::start(SandboxConfig {
        discarded_events: vec!["Old Promo".into()],
        ..SandboxConfig::default()
    });
    let (workspace, summary) = runs_with_refusals(&sandbox);
    let run_id = summary["run_id"].as_str().expect("run_id").to_string();
    let ui = Ui::start(workspace.dir.path(), &[]);

    // The JSON API: pipelines with their next fires in their zone and UTC, and the last run.
    let pipelines = json(&get(&ui.address, "/api/pipelines", None));
    let events = pipelines
        .as_array()
        .unwrap()
        .iter()
        .find(|pipeline| pipeline["name"] == "events")
        .unwrap_or_else(|| panic!("{pipelines}"));
    assert_eq!(events["target"], "events");
    assert_eq!(events["starts"]["cron"], "0 3 * * *");
    let fire = events["next_fires"][0]["local"].as_str().unwrap();
    assert!(fire.contains("03:00:00 IST (+05:30)"), "{fire}");
    assert!(
        events["next_fires"][0]["utc"]
            .as_str()
            .unwrap()
            .ends_with("21:30:00Z")
    );
    assert_eq!(events["last_run"]["run_id"], run_id.as_str());
    let broken = pipelines
        .as_array()
        .unwrap()
        .iter()
        .find(|pipeline| pipeline["name"] == "broken")
        .unwrap_or_else(|| panic!("{pipelines}"));
    assert!(broken["errors"].to_string().contains("nobody"), "{broken}");

    // Runs: the fields of `tapline history --json`; filters; one run with its reasons.
    let runs = json(&get(&ui.address, "/api/runs?pipeline=events", None));
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["records"]["rejected"], 2);
    assert_eq!(runs[0]["status"], "failed");
    let succeeded = json(&get(&ui.address, "/api/runs?status=succeeded", None));
    assert_eq!(succeeded, Value::Array(Vec::new()));
    let wrong = get(&ui.address, "/api/runs?status=finished", None);
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(wrong.body.contains("up_to_date"), "{}", wrong.body);
    let run = json(&get(&ui.address, &format!("/api/runs/{run_id}"), None));
    assert_eq!(run["reasons"][0]["code"], "528", "{run}");
    assert_eq!(run["reasons"][0]["count"], 2, "{run}");
    assert_eq!(run["reasons"][0]["example_line"], 9, "{run}");
    assert_eq!(get(&ui.address, "/api/runs/nope", None).status, 404);

    // Pages: the description is text, never markup; the run page names the reason and its
    // example line; the pipeline page charts its runs; the CSP allows only our own assets.
    let overview = get(&ui.address, "/", None);
    assert_eq!(overview.status, 200);
    assert!(
        overview.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{}",
        overview.body
    );
    assert!(!overview.body.contains("<img"), "{}", overview.body);
    assert!(overview.body.contains("03:00:00 IST (+05:30)"));
    assert!(
        overview
            .headers
            .contains("content-security-policy: default-src 'none'; style-src 'self'"),
        "{}",
        overview.headers
    );
    let page = get(&ui.address, &format!("/runs/{run_id}"), None);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("528") && page.body.contains("line 9"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Old Promo"), "{}", page.body);
    let pipeline = get(&ui.address, "/pipelines/events", None);
    assert!(pipeline.body.contains("<svg"), "{}", pipeline.body);
    assert!(pipeline.body.contains("passcode ***"), "{}", pipeline.body);
    assert!(!pipeline.body.contains(tapline::sandbox::DEFAULT_PASSCODE));
    let listed = get(&ui.address, "/runs?status=failed", None);
    assert!(listed.body.contains(&run_id), "{}", listed.body);

    // The rejects file downloads as it is.
    let download = get(&ui.address, &format!("/runs/{run_id}/rejects"), None);
    assert_eq!(download.status, 200);
    assert!(
        download.headers.contains("attachment"),
        "{}",
        download.headers
    );
    assert_eq!(download.body.lines().count(), 2, "{}", download.body);
}

#[test]
fn runs_page_by_page_newest_first() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("profiles.csv", common::profile_csv(3));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nrerun: always\n",
    );
    for _ in 0..3 {
        let (code, summary) = run_json(&workspace, &["profiles.yaml"]);
        assert_eq!(code, Some(0), "{summary}");
    }
    let ui = Ui::start(workspace.dir.path(), &[]);
    let all = json(&get(&ui.address, "/api/runs", None));
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let first = json(&get(&ui.address, "/api/runs?limit=2", None));
    assert_eq!(first.as_array().unwrap().len(), 2);
    let second = json(&get(
        &ui.address,
        &format!(
            "/api/runs?limit=2&before={}",
            first[1]["run_id"].as_str().unwrap()
        ),
        None,
    ));
    assert_eq!(second.as_array().unwrap().len(), 1);
    assert_eq!(second[0]["run_id"], ids[2]);
    // The page links to the next.
    let page = get(&ui.address, "/runs?limit=2", None);
    assert!(page.body.contains("Older runs"), "{}", page.body);
}

#[test]
fn with_a_token_every_page_needs_it_and_off_loopback_there_is_no_console_without_one() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("profiles.csv", common::profile_csv(2));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\n",
    );
    let (code, _) = run_json(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0));

    // Off loopback without a token: refused, saying how to fix it.
    let refused = common::tapline(
        workspace.dir.path(),
        &["ui", "--dir", ".", "--listen", "0.0.0.0:0"],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        common::stderr(&refused).contains("--token-file"),
        "{}",
        common::stderr(&refused)
    );

    let token = "4f6c0e1b9d2a7c35e8b1";
    workspace.write("console-token", format!("{token}\n"));
    let ui = Ui::start(workspace.dir.path(), &["--token-file", "console-token"]);
    for path in ["/", "/api/runs", "/api/pipelines", "/runs"] {
        let answer = get(&ui.address, path, None);
        assert_eq!(answer.status, 401, "{path}");
        assert!(
            answer.headers.contains("www-authenticate: basic"),
            "{}",
            answer.headers
        );
        assert_eq!(
            get(&ui.address, path, Some("Bearer wrong-token-wrong")).status,
            401
        );
        assert_eq!(
            get(&ui.address, path, Some(&format!("Bearer {token}"))).status,
            200
        );
    }
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{token}"));
    assert_eq!(
        get(&ui.address, "/", Some(&format!("Basic {basic}"))).status,
        200
    );
}

#[test]
fn the_daemon_serves_the_console_beside_metrics_and_health() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("profiles.csv", common::profile_csv(2));
    workspace.pipeline(
        "nightly",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nschedule: {cron: \"0 3 * * *\"}\n",
    );
    let daemon = DaemonProcess::start(&workspace, &[]);
    let address = daemon.address.clone();
    let pipelines = json(&get(&address, "/api/pipelines", None));
    assert_eq!(pipelines[0]["name"], "nightly", "{pipelines}");
    assert!(
        get(&address, "/metrics", None)
            .body
            .contains("tapline_pipelines_scheduled")
    );
    // A file broken after the daemon loaded it: the daemon runs its last valid version,
    // and the overview says so beside the error.
    let status = json(&get(&address, "/api/status", None));
    assert_eq!(
        status["daemon"]["entries"][0]["name"], "nightly",
        "{status}"
    );
    assert!(
        status["daemon"]["entries"][0]["next_fire_ms"].is_i64(),
        "{status}"
    );
    workspace.write(
        "nightly.yaml",
        "source: {path: profiles.csv}\ntarget: {entity: nobody}\n",
    );
    let overview = get(&address, "/", None).body;
    assert!(overview.contains("cannot be `nobody`"), "{overview}");
    assert!(
        overview.contains("the daemon runs its last valid version"),
        "{overview}"
    );

    // Without a token, the console takes no action.
    let refused = request(&address, "POST", "/api/pipelines/nightly/runs", &[]);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("--token-file"), "{}", refused.body);
    drop(daemon);

    // On a public address, --listen needs a token; --metrics-listen still serves metrics.
    let refused = common::tapline(
        workspace.dir.path(),
        &["daemon", "--dir", ".", "--listen", "0.0.0.0:0"],
    );
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        common::stderr(&refused)
    );
    assert!(common::stderr(&refused).contains("--token-file"));
}

#[test]
fn a_run_in_progress_shows_what_it_has_settled_so_far() {
    // Slow enough that the run is seen going: 40 requests of 250 ms, one at a time.
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: std::time::Duration::from_millis(250),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", common::profile_csv(40_000));
    workspace.pipeline(
        "big",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\n",
    );
    let ui = Ui::start(workspace.dir.path(), &[]);
    let overview = get(&ui.address, "/", None);
    assert!(
        overview.body.contains("<section id=\"running\" hidden"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("src=\"/console.js\""));
    let mut run = Command::new(env!("CARGO_BIN_EXE_tapline"))
        .current_dir(workspace.dir.path())
        .args(["run", "big.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the run");
    let mut first: Option<(String, u64)> = None;
    common::wait_until(120, "the run in progress with records settled", || {
        let running = json(&get(&ui.address, "/api/runs?status=running", None));
        first = running
            .as_array()
            .and_then(|runs| runs.first())
            .and_then(|run| {
                let accepted = run["records"]["accepted"].as_u64()?;
                let run_id = run["run_id"].as_str()?.to_string();
                (accepted > 0).then_some((run_id, accepted))
            });
        first.is_some()
    });
    let (run_id, accepted) = first.unwrap();
    let page = get(&ui.address, "/", None);
    assert!(page.body.contains(&run_id), "{}", page.body);
    assert!(
        !page.body.contains("<section id=\"running\" hidden"),
        "{}",
        page.body
    );
    common::wait_until(120, "more records settled", || {
        let now = json(&get(&ui.address, &format!("/api/runs/{run_id}"), None));
        now["records"]["accepted"].as_u64().unwrap_or(0) > accepted
    });
    let _ = run.kill();
    let _ = run.wait();
    let script = get(&ui.address, "/console.js", None);
    assert_eq!(script.status, 200);
    assert!(script.body.contains("/api/running"));
}

#[test]
fn the_daemons_console_runs_a_pipeline_now_and_replays_rejects_with_its_token_only() {
    // Slow enough that the run is seen going: 30 requests of 250 ms, one at a time.
    let sandbox = TestSandbox::start(SandboxConfig {
        discarded_events: vec!["Old Promo".into()],
        latency: std::time::Duration::from_millis(250),
        ..SandboxConfig::default()
    });
    let (workspace, events_run) = runs_with_refusals(&sandbox);
    workspace.write("profiles.csv", common::profile_csv(30_000));
    workspace.pipeline(
        "big",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\n",
    );
    let token = "9b1f3e7a5c2d8e4f6a0b";
    workspace.write("console-token", token);
    let daemon = DaemonProcess::start(&workspace, &["--token-file", "console-token"]);
    let address = daemon.address.as_str();
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());
    let post = |path: &str, headers: &[(&str, &str)]| request(address, "POST", path, headers);

    // Without the token, from another site, or for a pipeline the daemon does not have: no run.
    assert_eq!(post("/api/pipelines/big/runs", &[]).status, 401);
    let cross = post(
        "/api/pipelines/big/runs",
        &[auth, ("Origin", "https://elsewhere.example")],
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let unknown = post("/api/pipelines/nobody/runs", &[auth]);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body.contains("nobody"), "{}", unknown.body);
    let page = get(address, "/pipelines/big", Some(&bearer));
    assert!(page.body.contains("Run now"), "{}", page.body);

    // Run now: answered with the run's ID once it has begun.
    let started = post("/api/pipelines/big/runs", &[auth]);
    assert_eq!(started.status, 201, "{}", started.body);
    let started = json_of(&started);
    let run_id = started["run_id"].as_str().expect("a run ID").to_string();
    assert_eq!(started["url"], format!("/api/runs/{run_id}"));

    // Its live progress, with the time left once records have settled for a while.
    common::wait_until(
        120,
        "the daemon's run with records settled and a time left",
        || {
            let running = json(&get(address, "/api/running", Some(&bearer)));
            running.as_array().into_iter().flatten().any(|run| {
                run["run_id"] == run_id.as_str()
                    && run["trigger"] == "api"
                    && run["live"]["records"]["accepted"].as_u64() > Some(0)
                    && run["live"]["eta_seconds"].is_u64()
            })
        },
    );
    let busy = post("/api/pipelines/big/runs", &[auth]);
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert!(busy.body.contains("is running"), "{}", busy.body);
    let status = json(&get(address, "/api/status", Some(&bearer)));
    assert_eq!(status["served_by"], "daemon", "{status}");
    assert_eq!(status["daemon"]["actions"], true, "{status}");
    assert_eq!(status["daemon"]["pipelines"], 2, "{status}");
    assert!(
        status["daemon"]["budgets"][0]["account"]
            .as_str()
            .is_some_and(|account| account.contains('@')),
        "{status}"
    );

    // Replay the rejects of the run that had refusals: its two records go again.
    let events_id = events_run["run_id"].as_str().unwrap();
    let replayed = post(&format!("/api/runs/{events_id}/replay"), &[auth]);
    assert_eq!(replayed.status, 201, "{}", replayed.body);
    let replay_id = json_of(&replayed)["run_id"].as_str().unwrap().to_string();
    let mut replay = Value::Null;
    common::wait_until(120, "the replay ends", || {
        replay = json(&get(
            address,
            &format!("/api/runs/{replay_id}"),
            Some(&bearer),
        ));
        replay["status"] != "running"
    });
    assert_eq!(replay["trigger"], "replay", "{replay}");
    assert_eq!(replay["records"]["read"], 2, "{replay}");
    assert_eq!(replay["records"]["rejected"], 2, "{replay}");

    // The run page's button, as a browser posts it, leads to the new run's page.
    common::wait_until(120, "the first run ends", || {
        json(&get(address, &format!("/api/runs/{run_id}"), Some(&bearer)))["status"] != "running"
    });
    let origin = format!("http://{address}");
    let form = post(
        "/pipelines/big/run",
        &[
            auth,
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    );
    assert_eq!(form.status, 303, "{}", form.body);
    assert!(
        form.headers.contains("location: /runs/"),
        "{}",
        form.headers
    );

    // No secret in any answer or in the log: neither the passcode nor the token.
    for path in [
        "/",
        "/api/pipelines",
        "/api/status",
        "/api/running",
        "/pipelines/big",
    ] {
        let answer = get(address, path, Some(&bearer));
        assert!(
            !answer.body.contains(tapline::sandbox::DEFAULT_PASSCODE),
            "{path}"
        );
        assert!(!answer.body.contains(token), "{path}");
    }
    drop(daemon);
    let log = std::fs::read_to_string(workspace.path("daemon.log")).unwrap();
    assert!(log.contains("the console asked for a run"), "{log}");
    assert!(!log.contains(token), "{log}");
    assert!(!log.contains(tapline::sandbox::DEFAULT_PASSCODE), "{log}");
}

/// The JSON of an answer of any status.
fn json_of(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|error| panic!("{error}: {}", answer.body))
}

#[test]
fn without_its_folder_the_console_lists_the_pipelines_the_history_names() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("profiles.csv", common::profile_csv(2));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nschedule: {cron: \"0 4 * * *\"}\n",
    );
    let (code, summary) = run_json(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    // A machine with the state store only: another folder, no pipelines folder.
    let elsewhere = tempfile::tempdir().unwrap();
    let state = workspace.path(".tapline");
    let state = state.to_str().unwrap();
    let ui = Ui::start(
        elsewhere.path(),
        &["--dir", "pipelines", "--state-dir", state],
    );
    let pipelines = json(&get(&ui.address, "/api/pipelines", None));
    assert_eq!(pipelines.as_array().map(Vec::len), Some(1), "{pipelines}");
    assert_eq!(pipelines[0]["name"], "profiles", "{pipelines}");
    assert_eq!(
        pipelines[0]["last_run"]["run_id"], summary["run_id"],
        "{pipelines}"
    );
    // The file the run read is on this machine: its schedule and next fires show.
    assert_eq!(pipelines[0]["starts"]["kind"], "schedule", "{pipelines}");
    assert!(
        pipelines[0]["next_fires"][0]["utc"].is_string(),
        "{pipelines}"
    );
    let overview = get(&ui.address, "/", None);
    assert!(overview.body.contains("No folder"), "{}", overview.body);
    assert_eq!(get(&ui.address, "/pipelines/profiles", None).status, 200);

    std::fs::remove_file(workspace.path("profiles.yaml")).unwrap();
    let pipelines = json(&get(&ui.address, "/api/pipelines", None));
    assert_eq!(pipelines[0]["starts"]["kind"], "not_here", "{pipelines}");
    assert_eq!(
        pipelines[0]["last_run"]["status"], "succeeded",
        "{pipelines}"
    );
}
