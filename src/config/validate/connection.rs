//! The connection a pipeline names, and the database a query source names: found in
//! `connections.yaml` (or inline), their secrets resolved, their endpoints checked.

use super::{DEFAULT_REQUEST_TIMEOUT_SECONDS, parse_file};
use crate::config::diagnostic::{Diagnostic, did_you_mean};
use crate::config::file::{ConnectionFile, ConnectionRef, ConnectionsFile, DatabaseRef, Region};
use crate::config::model::{
    AccountLimits, Connection, Database, Dialect, Secret, redacted_database_url,
};
use crate::config::resolve::{
    SecretField, SecretSite, is_http_url, is_plain_http_off_this_machine, resolved, secret,
};
use crate::config::schema::FileKind;
use crate::config::yaml::Node;
use crate::config::{Credentials, yaml};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a connection was written: its file, tree, and JSON pointer within it.
struct ConnectionSite<'a> {
    file: PathBuf,
    root: &'a Node,
    pointer: String,
}

impl ConnectionSite<'_> {
    /// Where `field` of the entry is written; the entry itself for `""`.
    fn at(&self, field: &str) -> Option<yaml::Position> {
        if field.is_empty() {
            return Some(self.root.locate(&self.pointer));
        }
        Some(self.root.locate(&format!("{}/{field}", self.pointer)))
    }
}

pub(super) fn resolve_connection(
    file: &Path,
    root: &Node,
    connection: &ConnectionRef,
    folder: &Path,
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Connection> {
    match connection {
        ConnectionRef::Inline(spec) => {
            let site = ConnectionSite {
                file: file.to_path_buf(),
                root,
                pointer: "/connection".into(),
            };
            finish_connection("inline", spec, &site, credentials, diagnostics)
        }
        ConnectionRef::Named(name) => {
            let at = Some(root.locate("/connection"));
            let named = find_named(file, at, name, folder, diagnostics)?;
            let site = ConnectionSite {
                file: named.file.clone(),
                root: &named.root,
                pointer: named.pointer.clone(),
            };
            finish_connection(name, &named.spec, &site, credentials, diagnostics)
        }
    }
}

/// The database a query source names: found in `connections.yaml` (or inline), its URL
/// resolved. Under [`Credentials::Ignore`] (a `--sandbox` run, which still reads the real
/// database) the URL is resolved as `validate` does.
pub(super) fn resolve_database(
    file: &Path,
    root: &Node,
    database: &DatabaseRef,
    folder: &Path,
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Database> {
    let credentials = match credentials {
        Credentials::Ignore => Credentials::Check,
        other => other,
    };
    let at = Some(root.locate("/source/database"));
    match database {
        DatabaseRef::Inline(spec) => {
            let site = ConnectionSite {
                file: file.to_path_buf(),
                root,
                pointer: "/source/database".into(),
            };
            let given = Given::of(
                (spec.postgres.as_deref(), spec.postgres_file.as_deref()),
                (spec.mysql.as_deref(), spec.mysql_file.as_deref()),
            );
            finish_database("inline", given, &site, credentials, diagnostics)
        }
        DatabaseRef::Named(name) => {
            let named = find_named(file, at, name, folder, diagnostics)?;
            let site = ConnectionSite {
                file: named.file.clone(),
                root: &named.root,
                pointer: named.pointer.clone(),
            };
            let spec = &named.spec;
            if !is_database(spec) {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        at,
                        format!("connection `{name}` is a CleverTap account, not a database"),
                    )
                    .with_hint(format!(
                        "add a database to {} (`warehouse: {{ postgres: ${{WAREHOUSE_URL}} }}`) and name it here",
                        named.file.display()
                    )),
                );
                return None;
            }
            let given = Given::of(
                (spec.postgres.as_deref(), spec.postgres_file.as_deref()),
                (spec.mysql.as_deref(), spec.mysql_file.as_deref()),
            );
            finish_database(name, given, &site, credentials, diagnostics)
        }
    }
}

/// Whether a `connections.yaml` entry is a database.
fn is_database(spec: &ConnectionFile) -> bool {
    spec.postgres.is_some()
        || spec.postgres_file.is_some()
        || spec.mysql.is_some()
        || spec.mysql_file.is_some()
}

/// A database's URL as written: its dialect, the URL or the file holding it; `both` when a
/// PostgreSQL and a MySQL URL are given at once.
struct Given<'a> {
    dialect: Dialect,
    url: Option<&'a str>,
    url_file: Option<&'a str>,
    both: bool,
}

impl<'a> Given<'a> {
    fn of(
        postgres: (Option<&'a str>, Option<&'a str>),
        mysql: (Option<&'a str>, Option<&'a str>),
    ) -> Given<'a> {
        let is_mysql = mysql.0.is_some() || mysql.1.is_some();
        let is_postgres = postgres.0.is_some() || postgres.1.is_some();
        let (dialect, (url, url_file)) = if is_mysql {
            (Dialect::Mysql, mysql)
        } else {
            (Dialect::Postgres, postgres)
        };
        Given {
            dialect,
            url,
            url_file,
            both: is_mysql && is_postgres,
        }
    }

    /// The field the URL is written in.
    fn field(&self) -> &'static str {
        match (self.dialect, self.url_file.is_some()) {
            (Dialect::Postgres, false) => "postgres",
            (Dialect::Postgres, true) => "postgres_file",
            (Dialect::Mysql, false) => "mysql",
            (Dialect::Mysql, true) => "mysql_file",
        }
    }
}

/// An entry of `connections.yaml`, and where it is written.
struct Named {
    spec: ConnectionFile,
    file: PathBuf,
    root: Node,
    pointer: String,
}

/// Finds `name` in the `connections.yaml` beside the pipeline; a problem at `at` if it
/// cannot.
fn find_named(
    file: &Path,
    at: Option<yaml::Position>,
    name: &str,
    folder: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Named> {
    let path = ["connections.yaml", "connections.yml"]
        .iter()
        .map(|file| folder.join(file))
        .find(|candidate| candidate.exists());
    let Some(path) = path else {
        diagnostics.push(
            Diagnostic::error(file, at, format!("connection `{name}` needs a `connections.yaml` beside the pipeline, and there is none in `{}`", display_folder(folder)))
                .with_hint("create connections.yaml with the connection, or write the connection inline"),
        );
        return None;
    };
    let connections = parse_file::<ConnectionsFile>(&path, FileKind::Connections, diagnostics)?;
    let Some(spec) = connections.value.0.get(name) else {
        let names: Vec<&str> = connections.value.0.keys().map(String::as_str).collect();
        // A likely typo gets its one suggestion; otherwise the names there are.
        let diagnostic = match did_you_mean(name, names.iter().copied()) {
            Some(suggestion) => Diagnostic::error(file, at, format!("unknown connection `{name}`"))
                .with_hint(format!("did you mean `{suggestion}`?")),
            None => Diagnostic::error(
                file,
                at,
                format!(
                    "unknown connection `{name}`; {} defines {}",
                    path.display(),
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        diagnostics.push(diagnostic);
        return None;
    };
    Some(Named {
        spec: spec.clone(),
        pointer: format!("/{}", name.replace('~', "~0").replace('/', "~1")),
        file: path,
        root: connections.root,
    })
}

/// A database's URL, resolved and checked.
fn finish_database(
    name: &str,
    given: Given<'_>,
    site: &ConnectionSite<'_>,
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Database> {
    let file = site.file.as_path();
    let (url, url_file) = (given.url, given.url_file);
    if given.both {
        diagnostics.push(
            Diagnostic::error(
                file,
                site.at(""),
                format!("database `{name}` has both a PostgreSQL and a MySQL URL"),
            )
            .with_hint(
                "keep `postgres` (or `postgres_file`) or `mysql` (or `mysql_file`), not both",
            ),
        );
        return None;
    }
    // A URL without a password may be written as it is; one with a password warns.
    let written_with_password =
        url.is_some_and(|url| !url.contains("${") && redacted_database_url(url) != url);
    let what = format!("the password in the URL of database `{name}`");
    let resolved = if url.is_some_and(|url| !url.contains("${")) && !written_with_password {
        Ok(url.map(Secret::new))
    } else {
        secret(
            &SecretField {
                field: given.field(),
                what: &what,
                value: url,
                value_file: url_file,
                public: false,
            },
            &SecretSite {
                file,
                at: &|field| site.at(field),
            },
            credentials,
            diagnostics,
        )
    };
    let url = match resolved {
        Ok(Some(url)) => url,
        Ok(None) => {
            diagnostics.push(
                Diagnostic::error(file, site.at(""), format!("database `{name}` has no URL"))
                    .with_hint("add `postgres: ${WAREHOUSE_URL}` or `postgres_file: /path/to/url` (`mysql: ${APP_DB_URL}` for MySQL)"),
            );
            return None;
        }
        Err(()) => return None,
    };
    let text = url.expose();
    // Empty: validate could not resolve it here.
    if !text.is_empty()
        && let Err(diagnostic) = check_url(name, text, &given, site)
    {
        diagnostics.push(diagnostic);
        return None;
    }
    Some(Database {
        name: name.to_string(),
        dialect: given.dialect,
        url,
    })
}

/// Whether a database's URL can be used: its scheme and, by its dialect's own parser, the
/// rest.
fn check_url(
    name: &str,
    text: &str,
    given: &Given<'_>,
    site: &ConnectionSite<'_>,
) -> Result<(), Diagnostic> {
    let file = site.file.as_path();
    let at = site.at(given.field());
    let shown = redacted_database_url(text);
    match given.dialect {
        Dialect::Postgres => {
            let known_scheme = text.starts_with("postgres://") || text.starts_with("postgresql://");
            let key_values = !text.contains("://") && text.contains('=');
            if !known_scheme && !key_values {
                return Err(Diagnostic::error(
                    file,
                    at,
                    format!("the URL of database `{name}` must start with `postgres://` (or be libpq's `key=value` pairs), found `{shown}`"),
                )
                .with_hint("write it like `postgres://user@host:5432/db?sslmode=require`"));
            }
            crate::pg::settings(text).map(drop).map_err(|reason| {
                Diagnostic::error(file, at, format!("database `{name}` ({shown}): {reason}"))
                    .with_hint("write it like `postgres://user@host:5432/db?sslmode=require`, or `host=db dbname=crm sslmode=verify-full sslrootcert=/path/to/ca.pem`")
            })
        }
        Dialect::Mysql => crate::mysql::settings(text).map(drop).map_err(|reason| {
            Diagnostic::error(file, at, format!("database `{name}` ({shown}): {reason}"))
                .with_hint("write it like `mysql://user@host:3306/db?ssl-mode=REQUIRED`")
        }),
    }
}

fn display_folder(folder: &Path) -> String {
    if folder.as_os_str().is_empty() {
        ".".into()
    } else {
        folder.display().to_string()
    }
}

fn finish_connection(
    name: &str,
    spec: &ConnectionFile,
    site: &ConnectionSite<'_>,
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Connection> {
    let file = site.file.as_path();
    let account_id_text = account_id_text(name, spec, site, diagnostics)?;
    // The other fields are still checked when the passcode is wrong, so every problem is
    // reported at once.
    let passcode = passcode(name, spec, site, credentials, diagnostics)?;
    let connection = |account_id: String, base_url: String, passcode: Secret| Connection {
        name: name.to_string(),
        account_id,
        passcode,
        base_url,
        request_timeout: request_timeout(spec),
        limits: limits(spec),
    };
    if credentials == Credentials::Ignore {
        return Some(connection(String::new(), String::new(), passcode.ok()?));
    }

    let mut failed = false;
    // A variable unset under `Credentials::Check`: the run will resolve it.
    let mut unknown = false;
    let mut resolve = |field: &str, text: &str| -> Option<String> {
        match resolved(text, credentials, (file, site.at(field)), diagnostics) {
            Ok(Some(value)) => Some(value),
            Ok(None) => {
                unknown = true;
                None
            }
            Err(()) => {
                failed = true;
                None
            }
        }
    };
    let account_id = resolve("account_id", account_id_text);
    let endpoint = spec
        .endpoint
        .as_deref()
        .and_then(|text| resolve("endpoint", text));
    if failed {
        return None;
    }
    let passcode = passcode.ok()?;
    let Some(account_id) = account_id else {
        // Unset: the run will know it (validate checked the rest).
        return unknown.then(|| connection(String::new(), String::new(), passcode));
    };
    if account_id.trim().is_empty() {
        diagnostics.push(Diagnostic::error(
            file,
            site.at("account_id"),
            format!("connection `{name}` has an empty `account_id`"),
        ));
        return None;
    }
    let base_url = base_url(endpoint, spec.region, site, diagnostics)?;
    Some(connection(account_id, base_url, passcode))
}

/// The `account_id` as written, or why the entry is no CleverTap account: a database
/// entry, or one without an account ID.
fn account_id_text<'a>(
    name: &str,
    spec: &'a ConnectionFile,
    site: &ConnectionSite<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<&'a str> {
    let file = site.file.as_path();
    if is_database(spec) {
        let field = [
            ("postgres", spec.postgres.is_some()),
            ("postgres_file", spec.postgres_file.is_some()),
            ("mysql", spec.mysql.is_some()),
        ]
        .into_iter()
        .find_map(|(field, given)| given.then_some(field))
        .unwrap_or("mysql_file");
        diagnostics.push(
            Diagnostic::error(
                file,
                site.at(field),
                format!("connection `{name}` is a database: `connection` needs a CleverTap account"),
            )
            .with_hint("name the database in `source.database`, and a CleverTap account (with `account_id`) in `connection`"),
        );
        return None;
    }
    let Some(account_id) = spec.account_id.as_deref() else {
        diagnostics.push(
            Diagnostic::error(
                file,
                site.at(""),
                format!("connection `{name}` has no `account_id`"),
            )
            .with_hint(
                "add `account_id: ${CLEVERTAP_ACCOUNT_ID}` (the Project ID: Settings → Project)",
            ),
        );
        return None;
    };
    Some(account_id)
}

/// How long one request may take before it is retried.
fn request_timeout(spec: &ConnectionFile) -> Duration {
    Duration::from_secs(
        spec.request_timeout_seconds
            .map_or(DEFAULT_REQUEST_TIMEOUT_SECONDS, |seconds| {
                seconds.clamp(1, 600) as u64
            }),
    )
}

/// The account's limits, where the connection sets them (the schema keeps them in range).
fn limits(spec: &ConnectionFile) -> AccountLimits {
    let mut limits = AccountLimits::default();
    if let Some(event_properties) = spec
        .limits
        .as_ref()
        .and_then(|limits| limits.event_properties)
    {
        limits.event_properties = event_properties.clamp(1, 1024) as usize;
    }
    limits.concurrency = spec
        .limits
        .as_ref()
        .and_then(|limits| limits.concurrency)
        .map(|concurrency| concurrency.clamp(1, 15) as usize);
    limits
}

/// The connection's passcode: `None` when it has none (an error said so), `Some(Err(()))`
/// when it is given but wrong (the rest of the connection is still checked).
fn passcode(
    name: &str,
    spec: &ConnectionFile,
    site: &ConnectionSite<'_>,
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Result<Secret, ()>> {
    let what = format!("the passcode of connection `{name}`");
    let passcode_site = SecretSite {
        file: &site.file,
        at: &|field| site.at(field),
    };
    // The built-in sandbox's passcode is in the docs: to a sandbox on this machine it is
    // no secret (the README's own setup).
    let sandbox = spec.passcode.as_deref() == Some(crate::sandbox::DEFAULT_PASSCODE)
        && spec
            .endpoint
            .as_deref()
            .is_some_and(super::super::resolve::is_loopback_http);
    let passcode = secret(
        &SecretField {
            field: "passcode",
            what: &what,
            value: spec.passcode.as_deref(),
            value_file: spec.passcode_file.as_deref(),
            public: sandbox,
        },
        &passcode_site,
        credentials,
        diagnostics,
    );
    match passcode {
        Ok(Some(passcode)) => Some(Ok(passcode)),
        Ok(None) => {
            diagnostics.push(
                Diagnostic::error(
                    &site.file,
                    site.at("account_id"),
                    format!("connection `{name}` has no passcode"),
                )
                .with_hint(
                    "add `passcode: ${CLEVERTAP_PASSCODE}` or `passcode_file: /path/to/passcode`",
                ),
            );
            None
        }
        Err(()) => Some(Err(())),
    }
}

/// Where requests go: the `endpoint` (an http(s) URL; plain http to another machine is
/// warned of), else the region's CleverTap host.
fn base_url(
    endpoint: Option<String>,
    region: Option<Region>,
    site: &ConnectionSite<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<String> {
    let Some(endpoint) = endpoint else {
        return Some(
            crate::clevertap::wire::region_base_url(region.unwrap_or(Region::Eu1)).to_string(),
        );
    };
    if !is_http_url(&endpoint) {
        diagnostics.push(
            Diagnostic::error(
                &site.file,
                site.at("endpoint"),
                format!("`endpoint` `{endpoint}` is not an http(s) URL"),
            )
            .with_hint("write it like `https://proxy.example.com` or `http://127.0.0.1:9000`"),
        );
        return None;
    }
    if is_plain_http_off_this_machine(&endpoint) {
        diagnostics.push(
            Diagnostic::warning(
                &site.file,
                site.at("endpoint"),
                format!(
                    "`endpoint` `{}` is plain http to another machine: the passcode and every record cross the network unencrypted",
                    crate::config::model::redacted_url(&endpoint)
                ),
            )
            .with_hint("use https://, or http:// only to a proxy on this machine (127.0.0.1)"),
        );
    }
    Some(endpoint.trim_end_matches('/').to_string())
}
