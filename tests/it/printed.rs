//! What tapline prints for people, held whole as `insta` snapshots (in `tests/it/snapshots/`):
//! a change to a summary or to `validate`'s report shows as a diff to review, not as a
//! substring that still happens to match. `cargo insta review` (or `INSTA_UPDATE=always`)
//! accepts a deliberate change.

use crate::common::*;

#[test]
fn validate_reports_every_problem_at_its_place_with_its_fix() {
    let workspace = Workspace::new();
    workspace.write("a.csv", "identity\nu1\n");
    workspace.write(
        "p.yaml",
        "connection: {account_id: A, passcode_file: passcode.txt}\nsource: {path: a.csv, timezone: Asia/Calcuta}\ntarget: {entity: user_profile, array_operation: add}\nschedule: {cron: \"0 3 * *\"}\nthread_count: 11\n",
    );
    let report = Tapline::new(workspace.dir.path())
        .args(["validate", "p.yaml"])
        .run()
        .code(2)
        .stderr();
    stable_output().bind(|| insta::assert_snapshot!("validate_report", report));
}

#[test]
fn a_run_summary_says_what_happened_to_every_record() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let printed = Tapline::new(root)
        .args(["run", "pipelines/vip_profiles.yaml", "--sandbox"])
        .run()
        .code(0)
        .stdout();
    stable_output().bind(|| insta::assert_snapshot!("run_summary", printed));
}

#[test]
fn a_dry_run_lists_what_it_would_send_and_refuse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let printed = Tapline::new(root)
        .args(["run", "pipelines/vip_profiles.yaml", "--dry-run"])
        .run()
        .code(0)
        .stdout();
    stable_output().bind(|| insta::assert_snapshot!("dry_run_summary", printed));
}
