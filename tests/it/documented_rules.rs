//! CleverTap's rules as its docs state them (an audit against the docs and the peers): `#` is
//! refused only in profile property names, device token types are the three the API
//! documents (the others sent with a warning), profiles go before events in one `tapline run`,
//! and events out of `ts` order are counted in the summary.

use crate::common;

use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

/// Every summary line of a `tapline run --json`.
fn summaries(output: &std::process::Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|summary: &Value| summary.get("pipeline").is_some())
        .collect()
}

#[test]
fn a_hash_sign_is_refused_only_in_profile_property_names() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "orders.csv",
        "identity,evtName,ts,Order #\nu1,Charged,1714557600,A-17\n",
    );
    workspace.pipeline(
        "orders",
        &sandbox,
        "source: {path: orders.csv}\ntarget: {entity: user_events}\n",
    );
    let (code, summary) = run_json(&workspace, &["orders.yaml"]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        sandbox.sandbox.records("event")[0]["evtData"]["Order #"],
        "A-17"
    );

    workspace.write("people.csv", "identity,Order #\nu1,A-17\n");
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\nskip_invalid_records: true\n",
    );
    let output = tapline(workspace.dir.path(), &["run", "people.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("name `Order #` contains `#`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn token_types_the_api_does_not_document_are_sent_with_a_warning() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "tokens.csv",
        "objectId,id,type,p256dh,auth\no1,t1,fcm,,\no2,t2,chrome,k,a\no3,t3,WNS,,\no4,t4,blackberry,,\n",
    );
    workspace.pipeline(
        "tokens",
        &sandbox,
        "source: {path: tokens.csv}\ntarget: {entity: user_profiles, operation: upload_device_tokens}\nskip_invalid_records: true\n",
    );
    let (_, summary) = run_json(&workspace, &["tokens.yaml"]);
    assert_eq!(summary["records"]["accepted"], 3, "{summary}");
    assert_eq!(summary["records"]["skipped"], 1, "{summary}");
    let warnings = summary["warnings"].to_string();
    assert!(
        warnings.contains("1 device tokens of type `chrome`")
            && warnings.contains("1 device tokens of type `wns`")
            && warnings.contains("lists only apns, fcm and gcm"),
        "{warnings}"
    );
    let rejected = rejects(workspace.dir.path(), &summary);
    assert_eq!(rejected[0]["code"], "534", "{rejected:?}");
}

#[test]
fn profiles_go_before_events_and_events_out_of_order_are_counted() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "views.csv",
        "identity,evtName,ts\nu1,Viewed,1714557600\nu1,Viewed,1714557500\nu1,Viewed,1714557700\nu1,Viewed,1714557400\n",
    );
    workspace.write("people.csv", "identity,Name\nu1,One\n");
    workspace.pipeline(
        "views",
        &sandbox,
        "source: {path: views.csv}\ntarget: {entity: user_events}\n",
    );
    workspace.pipeline(
        "people",
        &sandbox,
        "source: {path: people.csv}\ntarget: {entity: user_profiles}\n",
    );
    // Named events first: profiles still go first.
    let output = tapline(
        workspace.dir.path(),
        &["run", "views.yaml", "people.yaml", "--json"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let runs = summaries(&output);
    assert_eq!(runs[0]["pipeline"], "people", "{runs:?}");
    assert_eq!(runs[1]["pipeline"], "views", "{runs:?}");
    assert!(
        runs[1]["warnings"]
            .to_string()
            .contains("2 events came earlier in time than the event before them"),
        "{}",
        runs[1]
    );
    assert_eq!(runs[0]["warnings"], serde_json::json!([]));
}
