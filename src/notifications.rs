//! Notifications of finished runs: emails over SMTP and webhooks signed with HMAC-SHA256.
//!
//! A notification that cannot be delivered is logged and returned as a warning; it never
//! fails the run, and a time limit keeps it from holding the run up.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;
use sha2::Sha256;

use crate::config::model::{
    Channel, Email, Notification, NotifyOn, SmtpSecurity, Webhook, redacted_url,
};
use crate::outcome::{Counts, RunStatus, StopKind, Trigger};
use crate::state::FirstError;

/// The header that carries a webhook body's signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Tapline-Signature";

/// How long one notification may take.
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// What a notification says about a run; the webhook's JSON body.
#[derive(Debug, Clone, Serialize)]
pub struct RunNotice {
    /// The pipeline's name.
    pub pipeline: String,
    /// The run's ID.
    pub run_id: String,
    /// How it ended: `succeeded`, `failed`, `interrupted` or `up_to_date`.
    pub status: RunStatus,
    /// What started it: `manual`, `replay`, `schedule`.
    pub trigger: Trigger,
    /// Where its records ended.
    pub records: Counts,
    /// Wall time.
    pub duration_ms: u64,
    /// Why it stopped early.
    pub stop_reason: Option<String>,
    /// Why it stopped early, as a word a program matches on (`gave_up`, `unauthorized`...).
    pub stop_kind: Option<StopKind>,
    /// Its first problems (line, code, reason).
    pub first_errors: Vec<FirstError>,
    /// Its rejects file.
    pub rejects_file: Option<String>,
}

/// Sends every notification that applies to the run, at once. Returns a warning for each
/// that could not be delivered.
pub async fn send(notifications: &[Notification], notice: &RunNotice) -> Vec<String> {
    let due = notifications
        .iter()
        .filter(|notification| match notification.on {
            NotifyOn::Always => true,
            NotifyOn::Success => notice.status.is_success(),
            NotifyOn::Failure => !notice.status.is_success(),
        });
    let sends = due.map(|notification| async move {
        let (what, result) = match &notification.channel {
            Channel::Email(email) => (
                format!("email to {}", email.to.join(", ")),
                send_email(email, notice).await,
            ),
            Channel::Webhook(webhook) => (
                format!("webhook {}", redacted_url(&webhook.url)),
                post_webhook(webhook, notice).await,
            ),
        };
        result.err().map(|error| {
            tracing::warn!(pipeline = %notice.pipeline, run_id = %notice.run_id, %what, %error, "notification not delivered");
            format!("notification not delivered ({what}): {error}")
        })
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// `sha256=<hex>` of HMAC-SHA256 over `body` with `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_webhook(webhook: &Webhook, notice: &RunNotice) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body = serde_json::to_vec(notice).map_err(|error| error.to_string())?;
    // A redirect would send the signed body to wherever the first server says: the
    // configured URL is the only place it goes.
    let client = reqwest::Client::builder()
        .timeout(TIME_LIMIT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tapline/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| error.to_string())?;
    let mut request = client
        .post(&webhook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &webhook.secret {
        request = request.header(
            SIGNATURE_HEADER,
            signature(secret.expose().as_bytes(), &body),
        );
    }
    let response = request
        .body(body)
        .send()
        .await
        // reqwest's message names the URL, which may hold a token.
        .map_err(|error| error.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|location| location.to_str().ok())
            .map_or_else(|| "none".to_string(), redacted_url);
        Err(format!(
            "HTTP {status}: the webhook redirects (Location: {location}), and redirects are not followed; give its final URL"
        ))
    } else {
        Err(format!("HTTP {status}"))
    }
}

async fn send_email(email: &Email, notice: &RunNotice) -> Result<(), String> {
    let message = email_message(email, notice)?;
    let builder = match email.security {
        SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.host)
            .map_err(|error| error.to_string())?,
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&email.host)
            .map_err(|error| error.to_string())?,
        SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.host),
    };
    let mut builder = builder.port(email.port).timeout(Some(TIME_LIMIT));
    if let Some((username, password)) = &email.login {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            password.expose().to_string(),
        ));
    }
    let transport = builder.build();
    tokio::time::timeout(TIME_LIMIT, transport.send(message))
        .await
        .map_err(|_| {
            format!(
                "no answer from {}:{} within {TIME_LIMIT:?}",
                email.host, email.port
            )
        })?
        .map(drop)
        .map_err(|error| error.to_string())
}

fn email_message(email: &Email, notice: &RunNotice) -> Result<Message, String> {
    let mut builder = Message::builder()
        .from(
            email
                .from
                .parse()
                .map_err(|error| format!("from: {error}"))?,
        )
        .subject(format!(
            "tapline: {} {} ({} read, {} accepted, {} failed)",
            notice.pipeline,
            notice.status.as_str().replace('_', " "),
            notice.records.read,
            notice.records.accepted,
            notice.records.failed
        ));
    for to in &email.to {
        builder = builder.to(to.parse().map_err(|error| format!("to: {error}"))?);
    }
    builder
        .header(ContentType::TEXT_PLAIN)
        .body(email_text(notice))
        .map_err(|error| error.to_string())
}

/// The body of a notification email.
fn email_text(notice: &RunNotice) -> String {
    let records = &notice.records;
    let mut text = format!(
        "Pipeline: {}\nRun: {} ({})\nStatus: {}\nDuration: {:.1} s\n\nRecords: {} read, {} accepted, {} unchanged, {} skipped, {} rejected, {} failed\n",
        notice.pipeline,
        notice.run_id,
        notice.trigger,
        notice.status.as_str().replace('_', " "),
        notice.duration_ms as f64 / 1000.0,
        records.read,
        records.accepted,
        records.unchanged,
        records.skipped,
        records.rejected,
        records.failed,
    );
    if let Some(reason) = &notice.stop_reason {
        text.push_str(&format!("\n{reason}\n"));
    }
    if !notice.first_errors.is_empty() {
        text.push_str("\nFirst problems:\n");
        for error in &notice.first_errors {
            text.push_str(&format!(
                "  line {}: [{}] {}\n",
                error.line, error.code, error.reason
            ));
        }
    }
    if let Some(path) = &notice.rejects_file {
        text.push_str(&format!("\nRejects file: {path}\n"));
    }
    text.push_str(&format!(
        "\nDetails: tapline history --run {}\n",
        notice.run_id
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
