//! CleverTap's official Node library (npm `clevertap` 1.3.0) uploads to the sandbox
//! unchanged: evidence that the sandbox speaks CleverTap's protocol, not just tapline's.
//!
//! Needs Node.js and npm (`.ci/run` makes sure of them). Without Node.js the test says it
//! was skipped, except under CI (`CI` set), where it fails.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::TestSandbox;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_official_node_library_uploads_to_the_sandbox() {
    if !node_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide Node.js for this test (see .ci/run)"
        );
        eprintln!(
            "SKIPPED: Node.js is not installed; install it to check the sandbox against CleverTap's Node library"
        );
        return;
    }
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !folder.join("node_modules/clevertap").exists() {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&folder)
            .status()
            .expect("npm runs");
        assert!(installed.success(), "npm ci failed in {}", folder.display());
    }
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let (account, passcode) = sandbox.sandbox.credentials();
    let output = Command::new("node")
        .arg("upload.js")
        .args([
            sandbox.sandbox.base_url(),
            account.to_string(),
            passcode.to_string(),
        ])
        .current_dir(&folder)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The library caps batches at 100 and sends them one after another.
    let results: Vec<Value> =
        serde_json::from_str(stdout.trim()).expect("the library printed its results");
    assert_eq!(results.len(), 3, "{stdout}");
    assert!(
        results[..2]
            .iter()
            .all(|r| r["status"] == "success" && r["processed"] == 100),
        "{stdout}"
    );
    assert_eq!(results[2]["status"], "partial");
    assert_eq!(results[2]["processed"], 51);
    assert_eq!(results[2]["unprocessed"][0]["code"], 515);
    assert!(
        results[2]["unprocessed"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .ends_with("Skipped record number : 52"),
        "{stdout}"
    );

    let seen = sandbox.inspect();
    assert_eq!(
        (seen.profiles, seen.events, seen.rejected, seen.requests),
        (250, 1, 1, 3)
    );
    assert_eq!(seen.max_in_flight, 1);
    assert_eq!(
        sandbox.sandbox.profile("node-7").expect("stored")["Email"],
        "node7@example.com"
    );
}
