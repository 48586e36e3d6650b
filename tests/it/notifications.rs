//! Notifications: a local SMTP sink and a local webhook receiver check what arrives, and a
//! notification that cannot be delivered never fails the run.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message the SMTP sink took.
#[derive(Debug, Clone, Default)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

/// Speaks just enough SMTP (RFC 5321) to take messages: no TLS, no login.
async fn smtp_sink(mail: Arc<Mutex<Vec<Mail>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mail = Arc::clone(&mail);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut current = Mail::default();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        current.from = line[10..].trim().to_string();
                        b"250 ok\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        current.to.push(line[8..].trim().to_string());
                        b"250 ok\r\n"
                    } else if upper == "DATA" {
                        let _ = write.write_all(b"354 go on\r\n").await;
                        while let Ok(Some(data)) = lines.next_line().await {
                            if data == "." {
                                break;
                            }
                            current.data.push_str(&data);
                            current.data.push('\n');
                        }
                        mail.lock().unwrap().push(std::mem::take(&mut current));
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    address
}

/// A webhook POST: its signature header and body.
type Hook = (Option<String>, Vec<u8>);

/// Takes webhook POSTs.
async fn webhook_receiver(hooks: Arc<Mutex<Vec<Hook>>>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let hooks = Arc::clone(&hooks);
            async move {
                let signature = headers
                    .get("x-tapline-signature")
                    .and_then(|value| value.to_str().ok())
                    .map(String::from);
                hooks.lock().unwrap().push((signature, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[test]
fn failures_are_emailed_and_every_run_is_posted_signed() {
    let sandbox = TestSandbox::start(SandboxConfig {
        discarded_events: vec!["Old Promo".into()],
        ..SandboxConfig::default()
    });
    let mail = Arc::new(Mutex::new(Vec::new()));
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let smtp = sandbox.block_on(smtp_sink(Arc::clone(&mail)));
    let hook = sandbox.block_on(webhook_receiver(Arc::clone(&hooks)));

    let workspace = Workspace::new();
    workspace.write(
        "events.csv",
        "identity,evtName,ts\nu1,Viewed,1764300000\nu2,Old Promo,1764300000\n",
    );
    workspace.write("hook-secret.txt", "s3cret\n");
    let notifications = format!(
        "notifications:\n  - on: failure\n    email:\n      smtp_host: 127.0.0.1\n      smtp_port: {}\n      security: none\n      from: tapline <tapline@example.com>\n      to: [crm@example.com, ops@example.com]\n  - on: always\n    webhook: {{ url: \"http://{hook}/hook\", secret_file: hook-secret.txt }}\n",
        smtp.port()
    );
    workspace.pipeline(
        "events",
        &sandbox,
        &format!("source: {{path: events.csv}}\ntarget: {{entity: user_events}}\nskip_invalid_records: true\n{notifications}"),
    );
    let output = tapline(workspace.dir.path(), &["run", "events.yaml", "--json"]);
    let run = summary(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a rejected record fails: {run}"
    );
    assert_eq!(run["warnings"], serde_json::json!([]), "{run}");

    let mails = mail.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "one email for the failure");
    assert_eq!(mails[0].from, "<tapline@example.com>");
    assert_eq!(mails[0].to, ["<crm@example.com>", "<ops@example.com>"]);
    assert!(
        mails[0].data.contains("Subject: tapline: events failed"),
        "{}",
        mails[0].data
    );
    assert!(mails[0].data.contains("line 3: [528]"), "{}", mails[0].data);
    assert!(mails[0].data.contains(run["run_id"].as_str().unwrap()));

    let posted = hooks.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    let (signature, body) = &posted[0];
    assert_eq!(
        signature.as_deref(),
        Some(tapline::notifications::signature(b"s3cret", body).as_str()),
        "the body is signed with the key from the file"
    );
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["pipeline"], "events");
    assert_eq!(body["run_id"], run["run_id"]);
    assert_eq!(body["status"], "failed");
    assert_eq!(body["records"]["rejected"], 1);
    assert_eq!(body["first_errors"][0]["code"], "528");

    // A run that succeeds: the webhook (always) hears of it, the email (failure) does not.
    workspace.write("events.csv", "identity,evtName,ts\nu3,Viewed,1764300000\n");
    let output = tapline(workspace.dir.path(), &["run", "events.yaml", "--json"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(mail.lock().unwrap().len(), 1);
    let posted = hooks.lock().unwrap().clone();
    assert_eq!(posted.len(), 2);
    let body: Value = serde_json::from_slice(&posted[1].1).unwrap();
    assert_eq!(body["status"], "succeeded");
}

#[test]
fn an_undeliverable_notification_is_a_warning_not_a_failure() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    // Nothing listens on these ports.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    workspace.pipeline(
        "events",
        &sandbox,
        &format!("source: {{path: events.csv}}\ntarget: {{entity: user_events}}\nnotifications:\n  - on: always\n    webhook: {{ url: \"http://127.0.0.1:{port}/hook\" }}\n  - on: success\n    email: {{ smtp_host: 127.0.0.1, smtp_port: {port}, security: none, from: t@example.com, to: [a@example.com] }}\n"),
    );
    let output = tapline(workspace.dir.path(), &["run", "events.yaml", "--json"]);
    let run = summary(&output);
    assert_eq!(output.status.code(), Some(0), "{run}");
    assert_eq!(run["records"]["accepted"], 1);
    let warnings = run["warnings"].to_string();
    assert!(
        warnings.contains("notification not delivered (webhook"),
        "{warnings}"
    );
    assert!(
        warnings.contains("notification not delivered (email"),
        "{warnings}"
    );
}

#[test]
fn notification_settings_are_checked_offline() {
    let workspace = Workspace::new();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    workspace.write(
        "events.yaml",
        "connection: {account_id: A, passcode: P}\nsource: {path: events.csv}\ntarget: {entity: user_events}\nnotifications:\n  - on: failure\n  - webhook: {url: \"ftp://example.com\"}\n  - email: {smtp_host: smtp.example.com, from: not-an-address, to: [a@example.com], username: me}\n  - webhook: {url: \"https://example.com\", secret: \"${TAPLINE_UNSET_SECRET}\"}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "events.yaml"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{errors}");
    for expected in [
        "events.yaml:5:5: error: a notification needs `email` or `webhook`",
        "events.yaml:6:20: error: `ftp://example.com` is not an http(s) URL",
        "is not an email address",
        "`username` needs a `password` or `password_file`",
        "events.yaml:8:5",
        "environment variable `TAPLINE_UNSET_SECRET` is not set",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }

    workspace.write(
        "events.yaml",
        "connection: {account_id: A, passcode: P}\nsource: {path: events.csv}\ntarget: {entity: user_events}\nnotifications:\n  - on: sometimes\n    webhook: {url: \"https://example.com\"}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "events.yaml"]);
    let errors = stderr(&output);
    assert!(
        errors.contains("events.yaml:5:9: error: `notifications.0.on` cannot be `sometimes`"),
        "{errors}"
    );
}

#[test]
fn a_webhook_that_redirects_is_not_followed() {
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let elsewhere = sandbox.block_on(webhook_receiver(Arc::clone(&hooks)));
    // A server that sends every POST on to the receiver with a 307 (which keeps the body).
    let redirect = sandbox.block_on(async move {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(
                        "location",
                        format!("http://{elsewhere}/hook?token=SECRET-TOKEN"),
                    )],
                )
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    });
    let workspace = Workspace::new();
    workspace.write("events.csv", "identity,evtName\nu1,Viewed\n");
    workspace.pipeline(
        "events",
        &sandbox,
        &format!("source: {{path: events.csv}}\ntarget: {{entity: user_events}}\nnotifications:\n  - on: always\n    webhook: {{ url: \"http://{redirect}/hook\", secret: s3cret }}\n"),
    );
    let output = tapline(workspace.dir.path(), &["run", "events.yaml", "--json"]);
    let summary = summary(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    let warnings = summary["warnings"].to_string();
    assert!(
        warnings.contains("HTTP 307") && warnings.contains("redirects are not followed"),
        "{warnings}"
    );
    assert!(warnings.contains("token=***"), "{warnings}");
    assert!(!warnings.contains("SECRET-TOKEN"), "{warnings}");
    assert!(
        hooks.lock().unwrap().is_empty(),
        "the signed body went elsewhere"
    );
}
