//! PostgreSQL connections, for query sources and the shared state store: TLS as libpq makes
//! it (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, in a URL or a `key=value` string), a
//! connect timeout, `application_name=tapline`, and error text that never holds the password.
//!
//! libpq's modes ([libpq-ssl]): `disable` (no TLS), `allow` (without TLS, or with it when the
//! server asks), `prefer` (the default: TLS when the server offers it) and `require` (TLS)
//! encrypt without checking the server's certificate; `require` with `sslrootcert` checks it
//! against that CA as `verify-ca` does; `verify-ca` checks that a trusted CA signed it, and
//! `verify-full` also that it is for the host connected to. `sslrootcert` is a file of CA
//! certificates (PEM, such as Amazon RDS's `global-bundle.pem`) or `system` (the platform's
//! roots); without it the `verify-*` modes read `~/.postgresql/root.crt`, as libpq does.
//!
//! [libpq-ssl]: https://www.postgresql.org/docs/current/libpq-ssl.html

mod tls;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::SslMode as WireSslMode;
use tokio_postgres::{Client, Config};

/// How long connecting may take when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// `sslmode`, as libpq names and means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Without TLS, or with it (unchecked) when the server insists.
    Allow,
    /// TLS (unchecked) when the server offers it: libpq's default.
    #[default]
    Prefer,
    /// TLS, the certificate unchecked (checked against `sslrootcert` when it is given).
    Require,
    /// TLS, the certificate signed by a trusted CA.
    VerifyCa,
    /// TLS, the certificate signed by a trusted CA and for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every mode, as written.
    pub const NAMES: [&'static str; 6] = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];

    fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the CA certificates that a server's certificate is checked against come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCerts {
    /// A PEM file of them.
    File(PathBuf),
    /// The platform's (`sslrootcert=system`).
    System,
}

/// TLS as a connection string asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Tls {
    mode: SslMode,
    root_certs: Option<RootCerts>,
    /// `sslcert` and `sslkey`: a client certificate and its key (PEM files).
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl Tls {
    /// Whether the server's certificate is checked, and how far: `None` (unchecked), or
    /// whether its name must match too.
    fn checks(&self) -> Option<NameCheck> {
        match self.mode {
            SslMode::VerifyFull => Some(NameCheck::Required),
            SslMode::VerifyCa => Some(NameCheck::Skipped),
            SslMode::Require if self.root_certs.is_some() => Some(NameCheck::Skipped),
            _ => None,
        }
    }
}

/// Whether a checked certificate must name the host connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameCheck {
    Required,
    Skipped,
}

/// How to reach a PostgreSQL server: its connection settings and TLS as libpq makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    config: Config,
    tls: Tls,
}

/// Reads a connection string, a URL (`postgres://user:password@host:5432/db?sslmode=require`)
/// or libpq's `key=value` form (`host=db dbname=crm sslmode=verify-full`), with tapline's
/// defaults for what it does not say. The message of an error never holds the password.
pub fn settings(text: &str) -> Result<Settings, String> {
    let (rest, ssl) = split_ssl_parameters(text)?;
    let mut tls = Tls::default();
    for (key, value) in ssl {
        match key.as_str() {
            "sslmode" => {
                tls.mode = SslMode::parse(&value).ok_or_else(|| {
                    format!(
                        "`sslmode={value}` is not a mode libpq knows: use one of {}",
                        SslMode::NAMES.join(", ")
                    )
                })?;
            }
            "sslrootcert" if value == "system" => tls.root_certs = Some(RootCerts::System),
            "sslrootcert" => tls.root_certs = Some(RootCerts::File(PathBuf::from(value))),
            "sslcert" => tls.client_cert.get_or_insert_default().0 = PathBuf::from(value),
            "sslkey" => tls.client_cert.get_or_insert_default().1 = PathBuf::from(value),
            _ => {}
        }
    }
    if let Some((cert, key)) = &tls.client_cert
        && (cert.as_os_str().is_empty() || key.as_os_str().is_empty())
    {
        return Err("a client certificate needs both `sslcert` and `sslkey`".into());
    }
    let mut config: Config = rest
        .parse()
        .map_err(|error: tokio_postgres::Error| format!("the URL is not valid: {error}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("tapline");
    }
    config.ssl_mode(match tls.mode {
        SslMode::Disable | SslMode::Allow => WireSslMode::Disable,
        SslMode::Prefer => WireSslMode::Prefer,
        _ => WireSslMode::Require,
    });
    Ok(Settings { config, tls })
}

/// The TLS parameters tapline handles itself, taken out of a connection string: the rest (for
/// tokio-postgres) and those parameters, values decoded.
fn split_ssl_parameters(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];
    let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
    let mut taken = Vec::new();
    if is_url {
        let Some((head, query)) = text.split_once('?') else {
            return Ok((text.to_string(), taken));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if OURS.contains(&key) {
                taken.push((key.to_string(), percent_decode(value)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            head.to_string()
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        return Ok((rest, taken));
    }
    let mut rest = String::new();
    for (key, value) in key_value_pairs(text)? {
        if OURS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            let _ = write!(rest, "{key}='{quoted}' ");
        }
    }
    Ok((rest, taken))
}

/// libpq's `key=value` form: pairs separated by spaces, a value in single quotes when it
/// holds spaces (`\'` and `\\` escaped inside).
fn key_value_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "the connection string is not valid: `{key}` has no `=` (write `key=value` pairs, or a `postgres://` URL)"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "the connection string is not valid: the value of `{key}` has no closing quote"
                        ));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// A `key=value` connection string as messages show it: the password masked.
pub fn shown_key_values(text: &str) -> String {
    match key_value_pairs(text) {
        Ok(pairs) => pairs
            .iter()
            .map(|(key, value)| match key.as_str() {
                "password" => format!("{key}=***"),
                _ if value.is_empty() || value.contains([' ', '\\', '\'']) => {
                    format!(
                        "{key}='{}'",
                        value.replace('\\', "\\\\").replace('\'', "\\'")
                    )
                }
                _ => format!("{key}={value}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(a connection string that cannot be read)".to_string(),
    }
}

/// A URL query value with its `%XX` escapes decoded.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text
                .get(at + 1..at + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    format!("`{text}` has a `%` that is not followed by two hex digits")
                })?;
            decoded.push(hex);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| format!("`{text}` is not UTF-8 once decoded"))
}

/// Connects, and drives the connection on the current tokio runtime until the client is
/// dropped; `label` names it in the log line of a connection that ends with an error.
pub async fn connect(settings: &Settings, label: &str) -> Result<Client, String> {
    let (client, connection) = match settings.tls.mode {
        SslMode::Disable => settings
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map(|(client, connection)| (client, connection.boxed())),
        SslMode::Allow => {
            // Without TLS first; with it when the server refuses a connection without.
            match settings.config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => Ok((client, connection.boxed())),
                Err(_) => {
                    let mut config = settings.config.clone();
                    config.ssl_mode(WireSslMode::Require);
                    connect_tls(&config, &settings.tls).await?
                }
            }
        }
        _ => connect_tls(&settings.config, &settings.tls).await?,
    }
    .map_err(|error| explain_connect(&error, settings))?;
    let label = label.to_string();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(database = %label, error = %explain(&error), "the database connection ended");
        }
    });
    Ok(client)
}

/// A connection's task, whatever its stream.
type Connection =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// A connection of either kind, boxed.
trait Boxed {
    fn boxed(self) -> Connection;
}

impl<S, T> Boxed for tokio_postgres::Connection<S, T>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn boxed(self) -> Connection {
        Box::pin(self)
    }
}

/// Connects with TLS set up as `tls` asks.
async fn connect_tls(
    config: &Config,
    tls: &Tls,
) -> Result<Result<(Client, Connection), tokio_postgres::Error>, String> {
    let tls = tls::client_config(tls)?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    Ok(config
        .connect(tls)
        .await
        .map(|(client, connection)| (client, connection.boxed())))
}

/// A connection error with, for a certificate that did not pass, the mode, the host and how
/// to fix it.
fn explain_connect(error: &tokio_postgres::Error, settings: &Settings) -> String {
    let text = explain(error);
    let certificate = text.contains("certificate") || text.contains("Certificate");
    let Some(names) = settings.tls.checks().filter(|_| certificate) else {
        return text;
    };
    let hosts: Vec<String> = settings
        .config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let fix = if names == NameCheck::Required && text.contains("not valid for name") {
        "connect by a name the certificate is for (one it lists above) as the URL's host, or check the CA alone with `sslmode=verify-ca`"
    } else {
        "give the CA that signed it with `sslrootcert=/path/to/ca.pem` (your provider's bundle, such as Amazon RDS's `global-bundle.pem`)"
    };
    format!(
        "{text} (sslmode={} to {}: the server's certificate did not pass; {fix})",
        settings.tls.mode.name(),
        hosts.join(",")
    )
}

/// A database error with its detail, hint and position: never the connection's password.
pub fn explain(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(tokio_postgres::error::ErrorPosition::Original(at)) = db.position() {
            let _ = write!(text, " (at character {at})");
        }
        if let Some(detail) = db.detail() {
            let _ = write!(text, "; {detail}");
        }
        if let Some(hint) = db.hint() {
            let _ = write!(text, "; hint: {hint}");
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_read_from_a_url_and_from_key_value_pairs() {
        let url = settings(
            "postgres://u:p@db.example.com:5432/crm?sslmode=verify-full&sslrootcert=%2Fetc%2Frds.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            url.tls.root_certs,
            Some(RootCerts::File("/etc/rds.pem".into()))
        );
        assert_eq!(url.config.get_application_name(), Some("x"));
        assert_eq!(url.config.get_dbname(), Some("crm"));

        let pairs = settings(
            r"host=db.example.com dbname=crm user=u password='it\'s a secret' sslmode=verify-ca sslrootcert=system sslcert=/c.pem sslkey = /k.pem",
        )
        .unwrap();
        assert_eq!(pairs.tls.mode, SslMode::VerifyCa);
        assert_eq!(pairs.tls.root_certs, Some(RootCerts::System));
        assert_eq!(
            pairs.tls.client_cert,
            Some(("/c.pem".into(), "/k.pem".into()))
        );
        assert_eq!(pairs.config.get_password(), Some(&b"it's a secret"[..]));
        assert_eq!(pairs.config.get_user(), Some("u"));

        // libpq's default.
        let plain = settings("postgres://db/crm").unwrap();
        assert_eq!(plain.tls.mode, SslMode::Prefer);
        assert_eq!(plain.tls.checks(), None);
        // `require` with a CA checks it, as libpq does.
        let require = settings("postgres://db/crm?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(require.tls.checks(), Some(NameCheck::Skipped));
    }

    #[test]
    fn a_key_value_string_is_shown_without_its_password() {
        assert_eq!(
            shown_key_values("host=db password='a secret' dbname=crm"),
            "host=db password=*** dbname=crm"
        );
        assert_eq!(
            shown_key_values("host=db password=secret application_name='my app'"),
            "host=db password=*** application_name='my app'"
        );
        assert!(!shown_key_values("password='unclosed").contains("unclosed"));
    }

    #[test]
    fn an_unknown_mode_names_the_accepted_ones_and_never_the_password() {
        let error = settings("postgres://u:hunter2@db/crm?sslmode=verify_full").unwrap_err();
        assert!(
            error.contains("`sslmode=verify_full`")
                && error.contains("disable, allow, prefer, require, verify-ca, verify-full"),
            "{error}"
        );
        assert!(!error.contains("hunter2"));
        let error = settings("host=db sslcert=/c.pem").unwrap_err();
        assert!(error.contains("`sslkey`"), "{error}");
    }
}
