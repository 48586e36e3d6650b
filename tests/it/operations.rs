//! The profile operations beyond uploads, end to end against the sandbox: device tokens,
//! demerge, subscriptions, phone disassociation, profile deletion.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tapline::sandbox::SandboxConfig;

/// Runs a pipeline; `--force` because these tests send one file again under new settings.
fn run_json(workspace: &Workspace, pipeline: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["run", pipeline, "--json", "--force"];
    args.extend_from_slice(extra);
    let output = tapline(workspace.dir.path(), &args);
    (output.status.code(), common::summary(&output))
}

#[test]
fn device_tokens_go_in_requests_of_at_most_100() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let mut csv = String::from("objectId,id,type,p256dh,auth\n");
    for i in 0..250 {
        if i == 0 {
            csv.push_str("g-0,https://push.example/0,chrome,key-0,auth-0\n");
        } else {
            csv.push_str(&format!("g-{i},token-{i},fcm,,\n"));
        }
    }
    workspace.write("tokens.csv", csv);
    // One request at a time, so the first body the sandbox sees is the first batch.
    workspace.pipeline("tokens", &sandbox, "source: {path: tokens.csv}\ntarget: {entity: user_profiles, operation: upload_device_tokens}\nthread_count: 1\n");
    let (code, summary) = run_json(&workspace, "tokens.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["requests"], 3);
    let seen = sandbox.inspect();
    assert_eq!(
        (seen.tokens, seen.requests, seen.largest_request),
        (250, 3, 100)
    );
    // The exact JSON of the first request.
    let first = &seen.first_bodies["upload"]["d"];
    assert_eq!(first.as_array().map(Vec::len), Some(100));
    assert_eq!(
        first[0],
        json!({"type": "token", "objectId": "g-0", "tokenData": {"id": "https://push.example/0", "type": "chrome", "keys": {"p256dh": "key-0", "auth": "auth-0"}}})
    );
    assert_eq!(
        first[1],
        json!({"type": "token", "objectId": "g-1", "tokenData": {"id": "token-1", "type": "fcm"}})
    );
}

#[test]
fn demerge_sends_100_identities_per_request_within_its_concurrency() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(50),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    let mut csv = String::from("identity\n");
    for i in 0..250 {
        csv.push_str(&format!("user-{i}\n"));
    }
    workspace.write("demerge.csv", csv);
    let body = "source: {path: demerge.csv}\ntarget: {entity: user_profiles, operation: demerge, confirm_destructive: true}\nthread_count: 10\n";
    workspace.pipeline("demerge", &sandbox, body);
    let (code, summary) = run_json(&workspace, "demerge.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["records"]["accepted"], 250);
    let seen = sandbox.inspect();
    assert_eq!(seen.requests_by_api["demerge"], 3);
    assert!(
        seen.max_in_flight_by_api["demerge"] <= 3,
        "{:?}",
        seen.max_in_flight_by_api
    );
    assert_eq!(seen.demerged.len(), 250);
    assert!(seen.demerged.contains(&"user-249".to_string()));
    // Requests run concurrently: the first to arrive is a full batch or the last one.
    let first = &seen.first_bodies["demerge"];
    let identities = first["identities"]
        .as_array()
        .expect("a list of identities");
    assert!(identities.len() == 100 || identities.len() == 50, "{first}");
    assert!(
        identities
            .iter()
            .all(|identity| identity.as_str().is_some_and(|i| i.starts_with("user-"))),
        "{first}"
    );
    assert_eq!(
        first.as_object().map(|o| o.len()),
        Some(1),
        "only `identities`: {first}"
    );
}

/// GETs one of the sandbox's inspection endpoints.
fn sandbox_get(sandbox: &TestSandbox, path_and_query: &str) -> Value {
    let url = format!("{}{path_and_query}", sandbox.sandbox.base_url());
    sandbox.block_on(async {
        reqwest::get(url)
            .await
            .expect("the sandbox answers")
            .json()
            .await
            .expect("JSON")
    })
}

#[test]
fn delete_profiles_sends_one_kind_per_request_100_at_most_within_its_concurrency() {
    let sandbox = TestSandbox::start(SandboxConfig {
        latency: Duration::from_millis(50),
        ..SandboxConfig::default()
    });
    let workspace = Workspace::new();
    // 255 profiles, and an event for p-0, in CleverTap first.
    let mut profiles = String::from("identity,Plan\n");
    for i in 0..255 {
        profiles.push_str(&format!("p-{i},gold\n"));
    }
    workspace.write("profiles.csv", profiles);
    workspace.write(
        "events.csv",
        "identity,evtName\np-0,Signed Up\np-250,Signed Up\n",
    );
    workspace.pipeline(
        "profiles",
        &sandbox,
        "source: {path: profiles.csv}\ntarget: {entity: user_profiles}\n",
    );
    workspace.pipeline(
        "events",
        &sandbox,
        "source: {path: events.csv}\ntarget: {entity: user_events}\n",
    );
    for pipeline in ["profiles.yaml", "events.yaml"] {
        let (code, summary) = run_json(&workspace, pipeline, &[]);
        assert_eq!(code, Some(0), "{summary}");
    }
    // Delete p-0..p-249: 150 by identity, 20 by CleverTap ID, 80 by identity again; and two
    // rows that name no profile, or two at once.
    let mut erasures = String::from("identity,guid\n");
    let id = |i: usize| format!("p-{i}");
    for i in 0..150 {
        erasures.push_str(&format!("{},\n", id(i)));
    }
    for i in 150..170 {
        erasures.push_str(&format!(",{}\n", tapline::sandbox::clevertap_id(&id(i))));
    }
    erasures.push_str(",\np-1,__0123\n");
    for i in 170..250 {
        erasures.push_str(&format!("{},\n", id(i)));
    }
    workspace.write("erasures.csv", erasures);
    let body = "source: {path: erasures.csv}\ntarget: {entity: user_profiles, operation: delete_profiles, confirm_destructive: true}\nthread_count: 10\nskip_invalid_records: true\n";
    workspace.pipeline("erasures", &sandbox, body);
    let (code, summary) = run_json(&workspace, "erasures.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        (
            &summary["records"]["accepted"],
            &summary["records"]["skipped"]
        ),
        (&json!(250), &json!(2)),
        "{summary}"
    );
    let seen = sandbox.inspect();
    // One request per 100, cut where the kind changes: 100 + 50 identities, 20 guids, 80.
    assert_eq!(seen.requests_by_api["delete_profiles"], 4);
    assert!(
        (1..=3).contains(&seen.max_in_flight_by_api["delete_profiles"]),
        "{:?}",
        seen.max_in_flight_by_api
    );
    let bodies = [
        json!({"identity": (0..100).map(id).collect::<Vec<_>>()}),
        json!({"identity": (100..150).map(id).collect::<Vec<_>>()}),
        json!({"guid": (150..170).map(|i| tapline::sandbox::clevertap_id(&id(i))).collect::<Vec<_>>()}),
        json!({"identity": (170..250).map(id).collect::<Vec<_>>()}),
    ];
    let first = &seen.first_bodies["delete_profiles"];
    assert!(
        bodies.contains(first),
        "not a body tapline should send: {first}"
    );
    assert_eq!(seen.deleted.len(), 250);
    assert!(
        seen.deleted.iter().all(|deleted| deleted.found),
        "{:?}",
        seen.deleted
    );
    assert_eq!(
        seen.deleted
            .iter()
            .filter(|deleted| deleted.by == "guid")
            .count(),
        20
    );
    // The deleted profiles and their events are gone; the others stay.
    let records = sandbox_get(&sandbox, "/_sandbox/records");
    let left: Vec<&str> = records
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|record| record["identity"].as_str())
        .collect();
    assert_eq!(left, ["p-250", "p-251", "p-252", "p-253", "p-254", "p-250"]);
    // By kind: CleverTap's record types, and nothing else.
    let events = sandbox_get(&sandbox, "/_sandbox/records?type=event");
    assert!(
        events
            .as_array()
            .expect("records")
            .iter()
            .all(|record| record["type"] == "event"),
        "{events}"
    );
    let status = sandbox.block_on(async {
        reqwest::get(format!(
            "{}/_sandbox/records?type=profiles",
            sandbox.sandbox.base_url()
        ))
        .await
        .expect("the sandbox answers")
        .status()
    });
    assert_eq!(status, 400);
    assert_eq!(
        sandbox_get(&sandbox, "/_sandbox/profiles?identity=p-3"),
        json!([])
    );
    let kept = sandbox_get(&sandbox, "/_sandbox/profiles?identity=p-251");
    assert_eq!(
        kept[0]["guid"],
        json!(tapline::sandbox::clevertap_id("p-251"))
    );
    // The two bad rows are in the rejects file, with reasons.
    let rejects = rejects(workspace.dir.path(), &summary);
    let reasons: Vec<&str> = rejects
        .iter()
        .filter_map(|entry| entry["reason"].as_str())
        .collect();
    assert!(
        reasons.len() == 2
            && reasons[0].contains("no `identity` or `guid`")
            && reasons[1].contains("both `identity` and `guid`"),
        "{reasons:?}"
    );
}

#[test]
fn delete_profiles_needs_confirmation_and_dry_run_lists_every_profile() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("erasures.csv", "identity,guid\nu-1,\n,__ab12\n");
    workspace.pipeline("erasures", &sandbox, "source: {path: erasures.csv}\ntarget: {entity: user_profiles, operation: delete_profiles}\n");
    let output = tapline(workspace.dir.path(), &["validate", "erasures.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let errors = stderr(&output);
    assert!(
        errors.contains("`delete_profiles` deletes each profile")
            && errors.contains("CleverTap cannot undo it")
            && errors.contains("confirm_destructive: true"),
        "{errors}"
    );
    let output = tapline(workspace.dir.path(), &["run", "erasures.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(sandbox.inspect().requests, 0);

    workspace.pipeline("erasures", &sandbox, "source: {path: erasures.csv}\ntarget: {entity: user_profiles, operation: delete_profiles, confirm_destructive: true}\n");
    let output = tapline(workspace.dir.path(), &["run", "erasures.yaml", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0));
    let printed = stdout(&output);
    assert!(
        printed.contains("would affect these 2")
            && printed.contains("    identity u-1\n    guid __ab12\n")
            && printed.contains("/1/delete/profiles.json"),
        "{printed}"
    );
    let (code, summary) = run_json(&workspace, "erasures.yaml", &["--dry-run"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        summary["dry_run"]["affected"],
        json!(["identity u-1", "guid __ab12"])
    );
    assert_eq!(sandbox.inspect().requests, 0, "a dry run sent something");
}

#[test]
fn destructive_operations_need_confirmation_and_dry_run_lists_what_they_touch() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("phones.csv", "value\n+14155550101\n+14155550102\n");
    workspace.pipeline("phones", &sandbox, "source: {path: phones.csv}\ntarget: {entity: user_profiles, operation: disassociate_phone}\n");
    let output = tapline(workspace.dir.path(), &["validate", "phones.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let errors = stderr(&output);
    assert!(
        errors.contains("CleverTap cannot undo it") && errors.contains("confirm_destructive: true"),
        "{errors}"
    );
    let output = tapline(workspace.dir.path(), &["run", "phones.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(sandbox.inspect().requests, 0);

    workspace.pipeline("phones", &sandbox, "source: {path: phones.csv}\ntarget: {entity: user_profiles, operation: disassociate_phone, confirm_destructive: true}\n");
    let output = tapline(workspace.dir.path(), &["run", "phones.yaml", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0));
    let printed = stdout(&output);
    assert!(
        printed.contains("would affect these 2")
            && printed.contains("    +14155550101\n    +14155550102\n"),
        "{printed}"
    );
    assert!(printed.contains("/1/disassociate"), "{printed}");
    let (code, summary) = run_json(&workspace, "phones.yaml", &["--dry-run"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        summary["dry_run"]["affected"],
        json!(["+14155550101", "+14155550102"])
    );
    assert_eq!(sandbox.inspect().requests, 0, "a dry run sent something");

    let (code, summary) = run_json(&workspace, "phones.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    let seen = sandbox.inspect();
    assert_eq!(seen.disassociated, vec!["+14155550101", "+14155550102"]);
    assert_eq!(
        seen.first_bodies["disassociate"],
        json!({"d": [{"type": "phone", "value": "+14155550101"}, {"type": "phone", "value": "+14155550102"}]})
    );
}

#[test]
fn subscriptions_arrive_as_sent() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("subs.csv", "type,value,status,note\nemail,a@example.com,unsubscribe,x\nPhone,+919213231415,Resubscribe,\n");
    workspace.pipeline("subs", &sandbox, "source: {path: subs.csv}\ntarget: {entity: user_profiles, operation: update_subscription}\n");
    let (code, summary) = run_json(&workspace, "subs.yaml", &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(
        sandbox.inspect().first_bodies["subscribe"],
        json!({"d": [
            {"type": "email", "value": "a@example.com", "status": "Unsubscribe"},
            {"type": "phone", "value": "+919213231415", "status": "Resubscribe"}
        ]})
    );
}

/// Invalid rows per operation: skipped with their CleverTap code, or stopping the run.
#[test]
fn invalid_rows_per_operation_skip_or_stop() {
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "upload_device_tokens",
            "objectId,id,type\ng1,t1,fcm\ng2,t2,sms\ng3,t3,apns\n",
            "534",
            "",
        ),
        (
            "upload_device_tokens",
            "objectId,id,type\ng1,t1,fcm\ng2,,fcm\ng3,t3,apns\n",
            "532",
            "",
        ),
        ("demerge", "identity\nu1\n\nu3\n", "", ""),
        (
            "update_subscription",
            "type,value,status\nemail,a@example.com,Unsubscribe\nemail,not-an-email,Unsubscribe\nphone,+14155550101,Resubscribe\n",
            "515",
            "",
        ),
        (
            "update_subscription",
            "type,value,status\nemail,a@example.com,Unsubscribe\nphone,+14155550101,Maybe\nphone,+14155550102,Resubscribe\n",
            "invalid_record",
            "",
        ),
        (
            "disassociate_phone",
            "value\n+14155550101\n5550102\n+14155550103\n",
            "516",
            "",
        ),
    ];
    for (operation, csv, code, _) in cases {
        let sandbox = TestSandbox::start(SandboxConfig::default());
        let workspace = Workspace::new();
        workspace.write("rows.csv", csv);
        let confirm = if operation == "demerge" || operation == "disassociate_phone" {
            ", confirm_destructive: true"
        } else {
            ""
        };
        let target = format!(
            "source: {{path: rows.csv}}\ntarget: {{entity: user_profiles, operation: {operation}{confirm}}}\n"
        );
        if code.is_empty() {
            // A blank line is no row: nothing is invalid.
            workspace.pipeline("p", &sandbox, &target);
            let (exit, summary) = run_json(&workspace, "p.yaml", &[]);
            assert_eq!(
                (exit, summary["records"]["accepted"].as_u64()),
                (Some(0), Some(2)),
                "{operation}: {summary}"
            );
            continue;
        }
        workspace.pipeline(
            "p",
            &sandbox,
            &format!("{target}skip_invalid_records: true\n"),
        );
        let (exit, summary) = run_json(&workspace, "p.yaml", &[]);
        assert_eq!(exit, Some(0), "{operation}: {summary}");
        assert_eq!(
            summary["records"],
            json!({"read": 3, "accepted": 2, "skipped": 1, "rejected": 0, "failed": 0}),
            "{operation}"
        );
        let rejects = rejects(workspace.dir.path(), &summary);
        assert_eq!(
            (rejects[0]["line"].as_u64(), rejects[0]["code"].as_str()),
            (Some(3), Some(code)),
            "{operation}: {rejects:?}"
        );

        workspace.pipeline("p", &sandbox, &target);
        let (exit, summary) = run_json(&workspace, "p.yaml", &[]);
        assert_eq!(exit, Some(1), "{operation}: {summary}");
        assert_eq!(
            summary["records"],
            json!({"read": 2, "accepted": 1, "skipped": 0, "rejected": 0, "failed": 1}),
            "{operation}"
        );
        assert!(
            summary["stop_reason"]
                .as_str()
                .unwrap_or_default()
                .contains("line 3"),
            "{operation}: {summary}"
        );
    }
}

#[test]
fn the_operation_examples_run_on_the_built_in_sandbox() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for pipeline in [
        "pipelines/device_tokens.yaml",
        "pipelines/demerge.yaml",
        "pipelines/subscriptions.yaml",
        "pipelines/disassociate_phone.yaml",
    ] {
        let output = tapline(root, &["run", pipeline, "--sandbox", "--json"]);
        let summary = common::summary(&output);
        assert_eq!(output.status.code(), Some(0), "{pipeline}: {summary}");
        assert!(
            summary["records"]["accepted"].as_u64().unwrap_or_default() > 0,
            "{pipeline}: {summary}"
        );
    }
}

/// The exact body of the first request, one request at a time, for the operations the tests
/// above do not already pin down.
#[test]
fn exact_json_sent_for_profiles_events_and_demerge() {
    let cases = [
        (
            "profiles.csv",
            "identity,Name,Tags,DOB\nu1,Jo,\"[\"\"a\"\",\"\"b\"\"]\",1990-01-02\n",
            "target: {entity: user_profiles, array_operation: append}",
            "upload",
            json!({"d": [{"type": "profile", "identity": "u1", "profileData": {"Name": "Jo", "Tags": {"$add": ["a", "b"]}, "DOB": "$D_631238400"}}]}),
        ),
        (
            "events.csv",
            "identity,evtName,ts,Amount,Items[0].Name\nu1,Charged,2026-11-01 10:00:00,300,Book\n",
            "target: {entity: user_events}",
            "upload",
            json!({"d": [{"type": "event", "identity": "u1", "ts": 1793527200, "evtName": "Charged", "evtData": {"Amount": "300", "Items": [{"Name": "Book"}]}}]}),
        ),
        (
            "demerge.csv",
            "identity\nu1\nu2\n",
            "target: {entity: user_profiles, operation: demerge, confirm_destructive: true}",
            "demerge",
            json!({"identities": ["u1", "u2"]}),
        ),
    ];
    for (file, csv, target, api, expected) in cases {
        let sandbox = TestSandbox::start(SandboxConfig::default());
        let workspace = Workspace::new();
        workspace.write(file, csv);
        workspace.pipeline(
            "p",
            &sandbox,
            &format!("source: {{path: {file}}}\n{target}\nthread_count: 1\n"),
        );
        let (code, summary) = run_json(&workspace, "p.yaml", &[]);
        assert_eq!(code, Some(0), "{file}: {summary}");
        assert_eq!(sandbox.inspect().first_bodies[api], expected, "{file}");
    }
}
