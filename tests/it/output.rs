//! The output mapping and String Builder end to end: what CleverTap receives.

use crate::common;

use common::*;
use serde_json::json;
use tapline::sandbox::SandboxConfig;

#[test]
fn mapped_typed_and_computed_columns_arrive_as_configured() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write(
        "crm.csv",
        "user_id,email_address,signup,ltv,vip,tags,note\nc1,a@example.com,2024-03-15,12.5,yes,\"x, y\",private\nc2,b@example.com,never,3,no,z,\n",
    );
    let body = "source: {path: crm.csv}\ntarget: {entity: user_profiles, array_operation: remove}\noutput:\n  export_all_columns: false\n  columns:\n    - { source: user_id, name: identity }\n    - { source: email_address, name: Email }\n    - { source: signup, name: Signup, type: date }\n    - { source: ltv, name: LTV, type: number }\n    - { source: vip, name: VIP, type: boolean }\n    - { source: tags, name: Tags, type: array, array_operation: append }\n  strings:\n    - { name: Origin, value: \"{pipeline}:{segment_name}:{audience_id}:{column:user_id}\" }\n    - { name: Day, value: \"{timestamp:%Y}\" }\nsegment: { id: \"7\", name: VIP }\naudience: { id: \"42\" }\nskip_invalid_records: true\n";
    workspace.pipeline("crm", &sandbox, body);
    let output = tapline(workspace.dir.path(), &["run", "crm.yaml", "--json"]);
    let summary = common::summary(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(
        summary["records"],
        json!({"read": 2, "accepted": 1, "skipped": 1, "rejected": 0, "failed": 0})
    );
    let year = chrono::Utc::now().format("%Y").to_string();
    let profiles = sandbox.sandbox.records("profile");
    assert_eq!(
        profiles,
        vec![json!({
            "type": "profile",
            "identity": "c1",
            "profileData": {
                "Email": "a@example.com", "Signup": "$D_1710460800", "LTV": 12.5, "VIP": true,
                "Tags": {"$add": ["x", "y"]}, "Origin": "crm:VIP:42:c1", "Day": year
            }
        })]
    );
    let rejects = rejects(workspace.dir.path(), &summary);
    assert_eq!(rejects[0]["line"], 3);
    let reason = rejects[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("column `signup`") && reason.contains("never"),
        "{reason}"
    );
}

#[test]
fn every_column_is_sent_by_default_with_renames() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("people.csv", "uid,Name,Tags\nu1,Jo,\"[\"\"a\"\"]\"\n");
    let body = "source: {path: people.csv}\ntarget: {entity: user_profiles, array_operation: append}\noutput:\n  columns:\n    - { source: uid, name: identity }\n";
    workspace.pipeline("people", &sandbox, body);
    let output = tapline(workspace.dir.path(), &["run", "people.yaml", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(
        sandbox.sandbox.records("profile"),
        vec![
            json!({"type": "profile", "identity": "u1", "profileData": {"Name": "Jo", "Tags": {"$add": ["a"]}}})
        ]
    );
}
