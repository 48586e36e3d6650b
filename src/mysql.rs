//! MySQL and MariaDB connections, for query sources: TLS as MySQL's own clients name it
//! (`ssl-mode`, `ssl-ca` in the URL), a connect timeout, and error text that never holds the
//! password.
//!
//! The modes ([MySQL's `--ssl-mode`][modes]): `DISABLED` (no TLS), `PREFERRED` (the
//! default: TLS when the server offers it, the certificate not checked), `REQUIRED` (TLS,
//! not checked), `VERIFY_CA` (TLS, the certificate signed by a trusted CA: `ssl-ca=FILE`, or
//! the system's roots) and `VERIFY_IDENTITY` (also for the host connected to).
//!
//! [modes]: https://dev.mysql.com/doc/refman/8.4/en/connection-options.html#option_general_ssl-mode

use std::path::PathBuf;
use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// `ssl-mode`, as MySQL's clients name and mean it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disabled,
    /// TLS (unchecked) when the server offers it: the clients' default.
    #[default]
    Preferred,
    /// TLS, the certificate unchecked.
    Required,
    /// TLS, the certificate signed by a trusted CA.
    VerifyCa,
    /// TLS, the certificate signed by a trusted CA and for the host connected to.
    VerifyIdentity,
}

impl SslMode {
    fn parse(text: &str) -> Option<SslMode> {
        Some(match text.to_ascii_uppercase().replace('-', "_").as_str() {
            "DISABLED" => SslMode::Disabled,
            "PREFERRED" => SslMode::Preferred,
            "REQUIRED" => SslMode::Required,
            "VERIFY_CA" => SslMode::VerifyCa,
            "VERIFY_IDENTITY" => SslMode::VerifyIdentity,
            _ => return None,
        })
    }
}

/// A MySQL URL, read: what the driver takes, and the TLS tapline sets up itself.
#[derive(Clone)]
pub struct Settings {
    /// The URL without `ssl-mode` and `ssl-ca`, as `mysql://`.
    url: String,
    /// `ssl-mode`.
    pub mode: SslMode,
    /// `ssl-ca`: the CA certificates (PEM) the `VERIFY_*` modes trust, instead of the
    /// system's roots.
    pub ca: Option<PathBuf>,
}

/// Reads a `mysql://` (or `mariadb://`) URL; why it cannot be used otherwise, without the
/// password.
pub fn settings(url: &str) -> Result<Settings, String> {
    let rest = url
        .strip_prefix("mysql://")
        .or_else(|| url.strip_prefix("mariadb://"))
        .ok_or("the URL must start with `mysql://` (or `mariadb://`)")?;
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut mode = SslMode::default();
    let mut ca = None;
    let mut passed = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "ssl-mode" | "ssl_mode" | "sslmode" => {
                mode = SslMode::parse(&value).ok_or_else(|| {
                    format!("unknown `ssl-mode` `{value}`: one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY")
                })?;
            }
            "ssl-ca" | "ssl_ca" => ca = Some(PathBuf::from(value.as_ref())),
            _ => {
                passed.append_pair(&key, &value);
            }
        }
    }
    let passed = passed.finish();
    let url = if passed.is_empty() {
        format!("mysql://{base}")
    } else {
        format!("mysql://{base}?{passed}")
    };
    Opts::from_url(&url).map_err(|error| match error {
        mysql_async::UrlError::UnknownParameter { param } => format!(
            "unknown parameter `{param}` (tapline reads `ssl-mode` and `ssl-ca`, and the driver's own, such as `prefer_socket`)"
        ),
        // The driver's URL errors name a parameter or the scheme, never the password.
        other => format!("not a MySQL URL ({other})"),
    })?;
    Ok(Settings { url, mode, ca })
}

/// Connects as the settings say.
pub async fn connect(settings: &Settings) -> Result<Conn, String> {
    let opts = Opts::from_url(&settings.url).map_err(|error| error.to_string())?;
    let tls = |checked: bool, host_checked: bool| {
        let mut tls = SslOpts::default()
            .with_danger_accept_invalid_certs(!checked)
            .with_danger_skip_domain_validation(!host_checked);
        if let Some(ca) = &settings.ca {
            tls = tls.with_root_certs(vec![ca.clone().into()]);
        }
        tls
    };
    let attempt = |ssl: Option<SslOpts>| {
        let builder = OptsBuilder::from_opts(opts.clone()).ssl_opts(ssl);
        async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(builder)).await {
                Ok(connected) => connected,
                Err(_) => Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    ),
                ))),
            }
        }
    };
    let connected = match settings.mode {
        SslMode::Disabled => attempt(None).await,
        SslMode::Required => attempt(Some(tls(false, false))).await,
        SslMode::VerifyCa => match attempt(Some(tls(true, false))).await {
            // The driver means to skip the name check by matching rustls's old error text,
            // which rustls 0.23 no longer writes: the chain was verified (rustls checks it
            // before the name), so connect again, checking it for a name it holds.
            Err(error) => match name_in_certificate(&error.to_string()) {
                Some(name) => {
                    attempt(Some(
                        tls(true, true).with_danger_tls_hostname_override(Some(name)),
                    ))
                    .await
                }
                None => Err(error),
            },
            connected => connected,
        },
        SslMode::VerifyIdentity => attempt(Some(tls(true, true))).await,
        SslMode::Preferred => match attempt(Some(tls(false, false))).await {
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) => attempt(None).await,
            other => other,
        },
    };
    connected.map_err(|error| explain(&error))
}

/// The first DNS name a certificate is valid for, from rustls's refusal of it for another
/// name (`... certificate is only valid for DnsName("localhost")`).
fn name_in_certificate(refusal: &str) -> Option<String> {
    let (_, after) = refusal
        .split_once("not valid for name")?
        .1
        .split_once("DnsName(\"")?;
    let name = after.split('"').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// A driver error as a person reads it. The driver's errors never hold the password (a
/// refused login says `using password: YES`).
pub fn explain(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(server) => {
            format!("{} (MySQL error {})", server.message, server.code)
        }
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            "the server does not offer TLS (`ssl-mode=DISABLED` or `PREFERRED` connect without it)"
                .to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_mode_and_ssl_ca_are_read_and_the_rest_goes_to_the_driver() {
        assert_eq!(
            name_in_certificate(
                "Input/output error: invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\")"
            )
            .as_deref(),
            Some("localhost")
        );
        assert_eq!(
            name_in_certificate("invalid peer certificate: UnknownIssuer"),
            None
        );
        let read = settings("mysql://app:secret@db:3306/crm?ssl-mode=verify_identity&ssl-ca=/etc/ca.pem&prefer_socket=false").unwrap();
        assert_eq!(read.mode, SslMode::VerifyIdentity);
        assert_eq!(read.ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            read.url,
            "mysql://app:secret@db:3306/crm?prefer_socket=false"
        );
        assert_eq!(
            settings("mariadb://db/crm").unwrap().mode,
            SslMode::Preferred
        );
        let unknown = settings("mysql://app:secret@db/crm?ssl-mode=sometimes")
            .err()
            .unwrap();
        assert!(unknown.contains("VERIFY_IDENTITY"), "{unknown}");
        let wrong = settings("mysql://db/crm?colour=blue").err().unwrap();
        assert!(wrong.contains("`colour`"), "{wrong}");
        assert!(settings("postgres://db/crm").is_err());
    }
}
