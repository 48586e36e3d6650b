//! `thread_count: auto` against the sandbox: the limit grows while answers come back
//! quickly, never past the account's cap, and backs off where the account has less room.

use std::time::Duration;

use tapline::sandbox::SandboxConfig;

use crate::common::{TestSandbox, Workspace, kill_run_when, profile_csv, run_json, tapline};

#[test]
fn auto_grows_while_answers_are_quick_and_never_passes_the_cap() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(60_000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: auto\n",
    );
    let (code, summary) = run_json(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    let concurrency = &summary["concurrency"];
    assert_eq!(concurrency["adaptive"], true, "{summary}");
    assert_eq!(concurrency["min"], 4, "{summary}");
    let most = concurrency["max"].as_u64().unwrap();
    assert!((5..=15).contains(&most), "{summary}");
    let seen = sandbox.inspect();
    assert!(seen.max_in_flight <= 15, "{}", seen.max_in_flight);
    assert_eq!(seen.throttled, 0);
    assert_eq!(seen.distinct_profiles, 60_000);
    assert_eq!(summary["records"]["accepted"], 60_000);
    // The history keeps the limits the run went through.
    let run_id = summary["run_id"].as_str().unwrap();
    let shown = tapline(
        workspace.dir.path(),
        &["history", "--dir", ".", "--run", run_id],
    );
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains(&format!("in flight auto: between 4 and {most} requests")),
        "{shown}"
    );
}

#[test]
fn auto_backs_off_where_the_account_has_less_room_and_delivers_every_record_once() {
    // An account other clients share: 3 uploads in flight at most, where `auto` starts at 4.
    let sandbox = TestSandbox::start(SandboxConfig {
        max_concurrent: 3,
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(30_000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: auto\n",
    );
    let (code, summary) = run_json(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    let seen = sandbox.inspect();
    assert!(
        seen.throttled > 0,
        "the account's limit was never met: {summary}"
    );
    assert_eq!(
        summary["retries"].as_u64(),
        Some(seen.throttled),
        "{summary}"
    );
    // It backed off to what the account allows (and probes above it only now and then),
    // and met few 429s doing it.
    assert!(
        summary["concurrency"]["min"].as_u64() <= Some(3),
        "{summary}"
    );
    assert!(
        seen.throttled * 10 < seen.requests,
        "{} of {}",
        seen.throttled,
        seen.requests
    );
    assert_eq!(seen.distinct_profiles, 30_000);
    assert_eq!(summary["records"]["accepted"], 30_000);
}

#[test]
fn an_auto_run_killed_mid_way_resumes_and_loses_nothing() {
    const ROWS: u64 = 40_000;
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(ROWS as usize));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: auto\n",
    );
    kill_run_when(
        &workspace,
        &["profiles.yaml"],
        "a quarter of the run",
        || sandbox.inspect().profiles >= ROWS / 4,
    );
    assert!(sandbox.inspect().profiles < ROWS, "killed mid-way");
    let (code, summary) = run_json(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary["resumed_from"].is_string(), "{summary}");
    assert_eq!(
        summary["records"]["accepted"].as_u64().unwrap()
            + summary["rows_resumed"].as_u64().unwrap(),
        ROWS,
        "{summary}"
    );
    assert_eq!(sandbox.inspect().distinct_profiles, ROWS as usize);
}

#[test]
fn auto_backs_off_while_the_account_is_busy_and_grows_again_once_it_is_not() {
    // Another client fills the account for the first 12 uploads, then leaves.
    let sandbox = TestSandbox::start(SandboxConfig {
        throttled_uploads: 12,
        latency: Duration::from_millis(200),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    workspace.write("profiles.csv", profile_csv(80_000));
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: auto\n",
    );
    let (code, summary) = run_json(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    let concurrency = &summary["concurrency"];
    // Down from its start of 4 while the 429s came...
    assert!(concurrency["min"].as_u64() < Some(4), "{summary}");
    // ...and, once they stopped, above where it started.
    assert!(concurrency["max"].as_u64() > Some(4), "{summary}");
    assert!(concurrency["final"].as_u64() > Some(4), "{summary}");
    assert_eq!(sandbox.inspect().throttled, 12);
    assert_eq!(sandbox.inspect().distinct_profiles, 80_000);
}
