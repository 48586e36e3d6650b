//! The sandbox over HTTP: CleverTap's headers, limits, error codes and answers.

use crate::common;

use std::time::Duration;

use common::TestSandbox;
use serde_json::{Value, json};
use tapline::sandbox::SandboxConfig;

struct Answer {
    status: u16,
    body: Value,
}

/// POSTs a body to the sandbox with the given credentials.
fn post(sandbox: &TestSandbox, path: &str, account: &str, passcode: &str, body: String) -> Answer {
    let url = format!("{}{path}", sandbox.sandbox.base_url());
    sandbox.block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .header("X-CleverTap-Account-Id", account)
            .header("X-CleverTap-Passcode", passcode)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the sandbox answers");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Answer { status, body }
    })
}

fn upload(sandbox: &TestSandbox, records: Value) -> Answer {
    let (account, passcode) = sandbox.sandbox.credentials();
    let (account, passcode) = (account.to_string(), passcode.to_string());
    post(
        sandbox,
        "/1/upload",
        &account,
        &passcode,
        json!({ "d": records }).to_string(),
    )
}

#[test]
fn checks_credentials() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let body = json!({"d": []}).to_string();
    let wrong_account = post(
        &sandbox,
        "/1/upload",
        "nope",
        tapline::sandbox::DEFAULT_PASSCODE,
        body.clone(),
    );
    assert_eq!(
        (wrong_account.status, &wrong_account.body["error"]),
        (401, &json!("Account ID is not valid"))
    );
    let wrong_passcode = post(
        &sandbox,
        "/1/upload",
        tapline::sandbox::DEFAULT_ACCOUNT_ID,
        "nope",
        body,
    );
    assert_eq!(
        wrong_passcode.body,
        json!({"status": "fail", "error": "Invalid Credentials", "code": 401})
    );
    assert_eq!(sandbox.inspect().unauthorized, 2);
}

#[test]
fn refuses_malformed_and_oversized_requests() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let (account, passcode) = sandbox.sandbox.credentials();
    let (account, passcode) = (account.to_string(), passcode.to_string());
    let malformed = post(
        &sandbox,
        "/1/upload",
        &account,
        &passcode,
        "{not json".into(),
    );
    assert_eq!(
        (malformed.status, &malformed.body["error"]),
        (400, &json!("Malformed request"))
    );
    let records: Vec<Value> = (0..1001)
        .map(|i| json!({"type": "profile", "identity": i, "profileData": {}}))
        .collect();
    let oversized = upload(&sandbox, Value::Array(records));
    assert_eq!(oversized.status, 400, "{}", oversized.body);
    assert_eq!(sandbox.inspect().profiles, 0);
}

#[test]
fn answers_like_clevertap_with_per_record_codes() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let answer = upload(
        &sandbox,
        json!([
            {"type": "profile", "identity": "u1", "profileData": {"Name": "Jo", "Tags": ["a", "b"]}},
            {"type": "profile", "identity": "u2", "profileData": {"Email": "$$$$$"}},
            {"type": "event", "identity": "u1", "evtName": "App Launched", "evtData": {}},
            {"type": "event", "FBID": "34322423", "ts": 1468308340, "evtName": "Product viewed", "evtData": {"Price": 59.99}},
            {"type": "profile", "identity": "u1", "profileData": {"Tags": {"$add": ["c"]}}},
            {"type": "profile", "identity": "u1", "profileData": {"Tags": {"$remove": ["a"]}}},
        ]),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["status"], "partial");
    assert_eq!(answer.body["processed"], 4);
    let unprocessed = answer.body["unprocessed"].as_array().expect("a list");
    assert_eq!(unprocessed.len(), 2);
    assert_eq!(unprocessed[0]["code"], 515);
    assert!(
        unprocessed[0]["error"]
            .as_str()
            .unwrap_or_default()
            .ends_with("Skipped record number : 2")
    );
    assert_eq!(unprocessed[0]["record"]["identity"], "u2");
    assert_eq!(unprocessed[1]["code"], 513);
    assert!(
        unprocessed[1]["error"]
            .as_str()
            .unwrap_or_default()
            .ends_with("Skipped record number : 3")
    );
    assert_eq!(
        sandbox.sandbox.profile("u1").expect("stored")["Tags"],
        json!(["b", "c"])
    );

    let all_bad = upload(&sandbox, json!([{"type": "event", "identity": "u"}]));
    assert_eq!(
        (
            all_bad.body["status"].as_str(),
            all_bad.body["processed"].as_u64()
        ),
        (Some("fail"), Some(0))
    );
    let fine = upload(
        &sandbox,
        json!([{"type": "token", "objectId": "g1", "tokenData": {"id": "t", "type": "fcm"}}]),
    );
    assert_eq!(
        fine.body,
        json!({"status": "success", "processed": 1, "unprocessed": []})
    );

    let inspection: Value = sandbox.block_on(async {
        reqwest::get(format!("{}/_sandbox/inspect", sandbox.sandbox.base_url()))
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON")
    });
    assert_eq!(
        (
            inspection["profiles"].as_u64(),
            inspection["events"].as_u64(),
            inspection["tokens"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!(inspection["rejected"], 3);
}

#[test]
fn answers_429_above_its_concurrency_limit() {
    let sandbox = TestSandbox::start(SandboxConfig {
        max_concurrent: 2,
        // Long enough that all five are in flight together even on a busy machine.
        latency: Duration::from_secs(3),
        ..SandboxConfig::default()
    });
    let (account, passcode) = sandbox.sandbox.credentials();
    let (account, passcode) = (account.to_string(), passcode.to_string());
    let url = format!("{}/1/upload", sandbox.sandbox.base_url());
    let statuses: Vec<u16> = sandbox.block_on(async {
        let client = reqwest::Client::new();
        let requests = (0..5).map(|_| {
            client
                .post(&url)
                .header("X-CleverTap-Account-Id", &account)
                .header("X-CleverTap-Passcode", &passcode)
                .body(json!({"d": []}).to_string())
                .send()
        });
        futures_util::future::join_all(requests)
            .await
            .into_iter()
            .map(|r| r.expect("answers").status().as_u16())
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(sandbox.inspect().throttled, 3);
}

#[test]
fn its_presigned_urls_answer_as_s3_does() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let (account, passcode) = sandbox.sandbox.credentials();
    let (account, passcode) = (account.to_string(), passcode.to_string());
    let base = sandbox.sandbox.base_url();
    let client = reqwest::Client::new();
    let new_url = || {
        let client = client.clone();
        let (account, passcode, base) = (account.clone(), passcode.clone(), base.clone());
        async move {
            let answer: serde_json::Value = client
                .post(format!("{base}/get_custom_list_segment_url"))
                .header("X-CleverTap-Account-Id", &account)
                .header("X-CleverTap-Passcode", &passcode)
                .body("{}")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["presignedS3URL"].as_str().unwrap().to_string()
        }
    };
    let answers = sandbox.block_on(async {
        let mut answers = Vec::new();
        // Chunked: 501 NotImplemented naming the header.
        let url = new_url().await;
        let chunks = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
            bytes::Bytes::from_static(b"Type,Identity\ni,u1\n"),
        )]);
        let response = client
            .put(&url)
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        answers.push((response.status().as_u16(), response.text().await.unwrap()));
        // A known length: accepted; the same URL again: 403.
        for _ in 0..2 {
            let response = client
                .put(&url)
                .body("Type,Identity\ni,u1\n")
                .send()
                .await
                .unwrap();
            answers.push((response.status().as_u16(), response.text().await.unwrap()));
        }
        // An unknown URL: 403.
        let response = client
            .put(format!("{base}/_sandbox/presigned/unknown"))
            .body("x")
            .send()
            .await
            .unwrap();
        answers.push((response.status().as_u16(), response.text().await.unwrap()));
        // No Content-Length and fewer bytes than announced, over a raw connection.
        // (Only the second ends its side of the connection: its body stops short.)
        for (request, cut_short) in [
            ("PUT {path} HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n", false),
            ("PUT {path} HTTP/1.1\r\nHost: sandbox\r\nContent-Length: 100\r\nConnection: close\r\n\r\nType,Identity\n", true),
        ] {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let url = new_url().await;
            let path = url.trim_start_matches(&base);
            let mut stream = tokio::net::TcpStream::connect(sandbox.sandbox.address())
                .await
                .unwrap();
            stream
                .write_all(request.replace("{path}", path).as_bytes())
                .await
                .unwrap();
            if cut_short {
                stream.shutdown().await.unwrap();
            }
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response).await;
            let status = response
                .split_whitespace()
                .nth(1)
                .and_then(|status| status.parse().ok())
                .unwrap_or(0);
            answers.push((status, response));
        }
        answers
    });
    let codes: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(codes, vec![501, 200, 403, 403, 411, 400], "{answers:?}");
    assert!(
        answers[0].1.contains("<Code>NotImplemented</Code>"),
        "{answers:?}"
    );
    assert!(answers[0].1.contains("<Header>Transfer-Encoding</Header>"));
    assert!(answers[2].1.contains("<Code>AccessDenied</Code>"));
    assert!(
        answers[4].1.contains("<Code>MissingContentLength</Code>"),
        "{answers:?}"
    );
    assert!(
        answers[5].1.contains("<Code>IncompleteBody</Code>"),
        "{answers:?}"
    );
    let uploads = sandbox.inspect().presigned_uploads;
    assert_eq!(uploads.len(), 6);
    assert_eq!(uploads[0].error_code.as_deref(), Some("NotImplemented"));
}

#[test]
fn profile_deletion_takes_identities_or_guids_never_both_and_100_at_most() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let (account, passcode) = sandbox.sandbox.credentials();
    let (account, passcode) = (account.to_string(), passcode.to_string());
    let delete = |body: Value| {
        post(
            &sandbox,
            "/1/delete/profiles.json",
            &account,
            &passcode,
            body.to_string(),
        )
    };
    let both = delete(json!({"identity": ["a"], "guid": ["b"]}));
    assert_eq!(both.status, 400, "{}", both.body);
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let too_many = delete(json!({ "identity": many }));
    assert_eq!(too_many.status, 400, "{}", too_many.body);
    assert_eq!(delete(json!({})).status, 400);
    assert_eq!(delete(json!({"identity": [""]})).status, 400);
    // A profile goes by identity or by its CleverTap ID; a single string is allowed too.
    assert_eq!(
        upload(
            &sandbox,
            json!([
                {"type": "profile", "identity": "a", "profileData": {"Plan": "gold"}},
                {"type": "profile", "identity": "b", "profileData": {"Plan": "gold"}}
            ])
        )
        .status,
        200
    );
    let by_identity = delete(json!({"identity": "a"}));
    assert_eq!(
        (by_identity.status, &by_identity.body["status"]),
        (200, &json!("success"))
    );
    let by_guid = delete(json!({"guid": [tapline::sandbox::clevertap_id("b"), "__unknown"]}));
    assert_eq!(by_guid.status, 200);
    assert!(sandbox.sandbox.profile("a").is_none() && sandbox.sandbox.profile("b").is_none());
    let deleted: Vec<(String, bool)> = sandbox
        .inspect()
        .deleted
        .into_iter()
        .map(|deleted| (deleted.by, deleted.found))
        .collect();
    assert_eq!(
        deleted,
        [
            ("identity".to_string(), true),
            ("guid".to_string(), true),
            ("guid".to_string(), false)
        ]
    );
}
