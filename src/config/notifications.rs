//! Checks the `notifications:` section: one channel per entry, mailboxes that parse, URLs,
//! and secrets read from the environment or a file, never written in the pipeline.

use std::path::Path;
use std::str::FromStr;

use super::Credentials;
use super::diagnostic::Diagnostic;
use super::file::{EmailFile, NotificationFile, NotifyOn, SmtpSecurity, WebhookFile};
use super::model::{Channel, Email, Notification, Secret, Webhook};
use super::resolve::{self, SecretField, SecretSite, is_http_url};
use super::yaml::Node;

/// The checked notifications, or `None` when any has an error (each one reported).
pub(super) fn build(
    file: &Path,
    root: &Node,
    entries: &[NotificationFile],
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Vec<Notification>> {
    let mut notifications = Vec::new();
    let mut failed = false;
    for (index, entry) in entries.iter().enumerate() {
        let site = Site {
            file,
            root,
            pointer: format!("/notifications/{index}"),
            credentials,
        };
        let channel = match (&entry.email, &entry.webhook) {
            (Some(email), None) => {
                build_email(&site.inside("email"), email, diagnostics).map(Channel::Email)
            }
            (None, Some(webhook)) => {
                build_webhook(&site.inside("webhook"), webhook, diagnostics).map(Channel::Webhook)
            }
            (email, _) => {
                let both = email.is_some();
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        Some(root.locate(&site.pointer)),
                        if both {
                            "a notification has both `email` and `webhook`"
                        } else {
                            "a notification needs `email` or `webhook`"
                        },
                    )
                    .with_hint(
                        "write one entry per channel: `- { on: failure, webhook: { url: ... } }`",
                    ),
                );
                None
            }
        };
        match channel {
            Some(channel) => notifications.push(Notification {
                on: entry.on.unwrap_or(NotifyOn::Failure),
                channel,
            }),
            None => failed = true,
        }
    }
    (!failed).then_some(notifications)
}

/// Where an entry is written, and whether its secrets are read.
struct Site<'a> {
    file: &'a Path,
    root: &'a Node,
    pointer: String,
    credentials: Credentials,
}

impl<'a> Site<'a> {
    /// The site of a section inside this one.
    fn inside(&self, section: &str) -> Site<'a> {
        Site {
            pointer: format!("{}/{section}", self.pointer),
            ..*self
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(
            self.file,
            Some(self.root.locate(&format!("{}/{field}", self.pointer))),
            message,
        )
    }

    /// A secret given in `field` (with `${VAR}`s) or in `{field}_file`: `Ok(None)` when
    /// neither is given, `Err` after reporting a problem.
    fn secret(
        &self,
        field: &str,
        value: Option<&str>,
        value_file: Option<&str>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Result<Option<Secret>, ()> {
        let what = format!("the {field}");
        let at = |key: &str| Some(self.root.locate(&format!("{}/{key}", self.pointer)));
        resolve::secret(
            &SecretField {
                field,
                what: &what,
                value,
                value_file,
                public: false,
            },
            &SecretSite {
                file: self.file,
                at: &at,
            },
            self.credentials,
            diagnostics,
        )
    }
}

fn build_email(
    site: &Site<'_>,
    email: &EmailFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Email> {
    let mut failed = false;
    let mut mailbox = |field: String, text: &str| -> Option<String> {
        match lettre::message::Mailbox::from_str(text.trim()) {
            Ok(_) => Some(text.trim().to_string()),
            Err(error) => {
                diagnostics.push(
                    site.error(&field, format!("`{text}` is not an email address: {error}"))
                        .with_hint("write `name@example.com` or `Name <name@example.com>`"),
                );
                failed = true;
                None
            }
        }
    };
    let from = mailbox("from".into(), &email.from);
    let to: Vec<String> = email
        .to
        .iter()
        .enumerate()
        .filter_map(|(index, address)| mailbox(format!("to/{index}"), address))
        .collect();
    if email.smtp_host.trim().is_empty() {
        diagnostics.push(site.error("smtp_host", "`smtp_host` is empty"));
        failed = true;
    }
    let password = site.secret(
        "password",
        email.password.as_deref(),
        email.password_file.as_deref(),
        diagnostics,
    );
    let login = match (&email.username, password) {
        (_, Err(())) => {
            failed = true;
            None
        }
        (Some(username), Ok(Some(password))) => Some((username.clone(), password)),
        (None, Ok(None)) => None,
        (Some(_), Ok(None)) => {
            diagnostics.push(
                site.error(
                    "username",
                    "`username` needs a `password` or `password_file`",
                )
                .with_hint("add `password: ${SMTP_PASSWORD}`"),
            );
            failed = true;
            None
        }
        (None, Ok(Some(_))) => {
            diagnostics.push(site.error("password", "a password needs a `username`"));
            failed = true;
            None
        }
    };
    if failed {
        return None;
    }
    let security = email.security.unwrap_or(SmtpSecurity::Starttls);
    let port = email.smtp_port.map_or(
        match security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        },
        |port| port.clamp(1, 65535) as u16,
    );
    Some(Email {
        host: email.smtp_host.trim().to_string(),
        port,
        security,
        login,
        from: from?,
        to,
    })
}

fn build_webhook(
    site: &Site<'_>,
    webhook: &WebhookFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Webhook> {
    let at = Some(site.root.locate(&format!("{}/url", site.pointer)));
    let url = match resolve::resolved(&webhook.url, site.credentials, (site.file, at), diagnostics)
    {
        Ok(Some(url)) if is_http_url(&url) => Some(url),
        Ok(Some(url)) => {
            diagnostics.push(
                site.error("url", format!("`{url}` is not an http(s) URL"))
                    .with_hint("write it like `https://hooks.example.com/tapline`"),
            );
            None
        }
        // Unset, under `tapline validate`: the run will know it.
        Ok(None) => Some(String::new()),
        Err(()) => None,
    };
    let secret = site.secret(
        "secret",
        webhook.secret.as_deref(),
        webhook.secret_file.as_deref(),
        diagnostics,
    );
    Some(Webhook {
        url: url?,
        secret: secret.ok()?,
    })
}
