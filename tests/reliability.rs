//! The ways an unfriendly world loses records, each kept as a scenario against the real
//! binary and the sandbox so that it cannot come back: broken files, pipelines changed
//! between runs, files changed during a run, interrupted daemons.

mod common;

use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

fn run(workspace: &Workspace, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["run", "--json"];
    all.extend_from_slice(args);
    let output = tapline(workspace.dir.path(), &all);
    (output.status.code(), summary(&output))
}

#[test]
fn a_quote_that_swallows_the_rest_of_the_file_fails_the_run_even_when_skipping() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let mut csv = String::from("identity,Name\nu1,One\nu2,\"P,2\n");
    for i in 0..50_000 {
        csv.push_str(&format!("user-{i},Name {i}\n"));
    }
    workspace.write("profiles.csv", csv);
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let (code, summary) = run(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(1), "{summary}");
    let stop = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(
        stop.contains("line 3: ") && stop.contains("a quote opened in this row"),
        "{summary}"
    );
    assert_counts_add_up(&summary);
    assert_eq!(summary["records"]["accepted"], 1, "{summary}");

    // The file was not delivered in full: a second run does not call it up to date.
    let (code, again) = run(&workspace, &["profiles.yaml"]);
    assert_eq!(code, Some(1), "{again}");
    assert!(again["up_to_date"].is_null(), "{again}");
}
