//! PostgreSQL connections, for query sources and the shared state store: TLS with the
//! platform's certificate roots, a connect timeout, `application_name=tapline`, and error
//! text that never holds the password.

use std::fmt::Write as _;
use std::time::Duration;

use tokio_postgres::{Client, Config};

/// How long connecting may take when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads a connection URL (`postgres://user:password@host:5432/db?sslmode=require`), with
/// tapline's defaults for what it does not say.
pub fn config(url: &str) -> Result<Config, String> {
    let mut config: Config = url
        .parse()
        .map_err(|error: tokio_postgres::Error| format!("the URL is not valid: {error}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("tapline");
    }
    Ok(config)
}

/// Connects, and drives the connection on the current tokio runtime until the client is
/// dropped; `label` names it in the log line of a connection that ends with an error.
pub async fn connect(config: &Config, label: &str) -> Result<Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = <rustls::ClientConfig as rustls_platform_verifier::ConfigVerifierExt>::with_platform_verifier()
        .map_err(|error| format!("cannot set up TLS: {error}"))?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let (client, connection) = config.connect(tls).await.map_err(|error| explain(&error))?;
    let label = label.to_string();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(database = %label, error = %explain(&error), "the database connection ended");
        }
    });
    Ok(client)
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
