//! PostgreSQL over TLS as libpq connects: `prefer` and `require` encrypt without checking the
//! certificate (a self-signed one, as Debian's and the managed databases' are to this
//! machine), `verify-ca` and `verify-full` check it against `sslrootcert`, and a check that
//! fails says which mode, which host, and how to fix it, never the password.
//!
//! They need the test server with `ssl = on` (Debian's default, with its "snakeoil"
//! certificate for `localhost`; `.ci/run` turns it on when it is off).

use crate::common;

use common::*;
use serde_json::Value;
use tapline::sandbox::SandboxConfig;

/// The test server's URL with this `sslmode` and more, on `host`.
fn url(database: &TestDatabase, host: &str, parameters: &str) -> String {
    let base = database
        .url
        .split_once('?')
        .map_or(database.url.as_str(), |(base, _)| base)
        .replace("127.0.0.1", host);
    format!("{base}?{parameters}")
}

/// The server's certificate file, if it serves TLS.
fn server_certificate(database: &TestDatabase) -> Option<String> {
    let ssl = database.rows("SELECT current_setting('ssl') AS ssl");
    if ssl[0]["ssl"] != "on" {
        assert!(
            std::env::var_os("CI").is_none(),
            "the test server must have ssl = on under CI (.ci/run turns it on)"
        );
        eprintln!("skipped: the test server has ssl = off");
        return None;
    }
    let file = database.rows("SELECT current_setting('ssl_cert_file') AS file");
    file[0]["file"].as_str().map(String::from)
}

/// Runs a query pipeline reading from `database_url`: whether its connection was encrypted
/// (the one profile's `Encrypted`), or the summary of a run that failed.
fn encrypted(database_url: &str, sandbox: &TestSandbox) -> Result<bool, Value> {
    let workspace = Workspace::new();
    let (account, _) = sandbox.sandbox.credentials();
    workspace.write(
        "pipeline.yaml",
        format!(
            "connection:\n  account_id: {account}\n  passcode_file: passcode.txt\n  endpoint: {}\nsource:\n  database: {{postgres: \"{database_url}\"}}\n  query: SELECT 'tls-' || pg_backend_pid() AS identity, ssl AS \"Encrypted\" FROM pg_stat_ssl WHERE pid = pg_backend_pid()\ntarget: {{entity: user_profiles}}\n",
            sandbox.sandbox.base_url()
        ),
    );
    let (code, summary) = run_json(&workspace, &["pipeline.yaml"]);
    if code != Some(0) {
        return Err(summary);
    }
    let identity = sandbox
        .sandbox
        .records("profile")
        .last()
        .expect("a profile")["identity"]
        .clone();
    Ok(sandbox.sandbox.profile(identity.as_str().unwrap()).unwrap()["Encrypted"] == true)
}

#[test]
fn prefer_and_require_encrypt_without_checking_and_verify_modes_check_the_ca() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    let Some(certificate) = server_certificate(&database) else {
        return;
    };
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let with_password = |host: &str, parameters: &str| {
        url(&database, host, parameters).replacen("postgres@", "postgres:hunter2@", 1)
    };
    // libpq's default, and `require`, to an address the certificate is not for.
    assert_eq!(
        encrypted(&url(&database, "127.0.0.1", "sslmode=prefer"), &sandbox),
        Ok(true)
    );
    assert_eq!(
        encrypted(&url(&database, "127.0.0.1", "application_name=t"), &sandbox),
        Ok(true),
        "prefer is the default"
    );
    assert_eq!(
        encrypted(&url(&database, "127.0.0.1", "sslmode=require"), &sandbox),
        Ok(true)
    );
    assert_eq!(
        encrypted(&url(&database, "127.0.0.1", "sslmode=disable"), &sandbox),
        Ok(false)
    );
    assert_eq!(
        encrypted(&url(&database, "127.0.0.1", "sslmode=allow"), &sandbox),
        Ok(false)
    );

    // The CA checked: by the name the certificate is for, or for any name with verify-ca.
    let root = format!("sslrootcert={certificate}");
    assert_eq!(
        encrypted(
            &url(
                &database,
                "localhost",
                &format!("sslmode=verify-full&{root}")
            ),
            &sandbox
        ),
        Ok(true)
    );
    assert_eq!(
        encrypted(
            &url(&database, "127.0.0.1", &format!("sslmode=verify-ca&{root}")),
            &sandbox
        ),
        Ok(true)
    );
    assert_eq!(
        encrypted(
            &url(&database, "127.0.0.1", &format!("sslmode=require&{root}")),
            &sandbox
        ),
        Ok(true)
    );

    // verify-full to an address the certificate is not for: a clear refusal.
    let refused = encrypted(
        &with_password("127.0.0.1", &format!("sslmode=verify-full&{root}")),
        &sandbox,
    )
    .unwrap_err();
    let reason = refused["stop_reason"].to_string();
    assert!(
        reason.contains("sslmode=verify-full to 127.0.0.1")
            && reason.contains("not valid for name")
            && reason.contains("connect by a name the certificate is for")
            && reason.contains("sslmode=verify-ca"),
        "{reason}"
    );
    assert!(!refused.to_string().contains("hunter2"), "{refused}");
    // verify-full against CAs that never signed the self-signed certificate (Debian's
    // bundle of public CAs).
    let public_cas = "/etc/ssl/certs/ca-certificates.crt";
    if std::path::Path::new(public_cas).is_file() {
        let refused = encrypted(
            &url(
                &database,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={public_cas}"),
            ),
            &sandbox,
        )
        .unwrap_err();
        let reason = refused["stop_reason"].to_string();
        assert!(
            reason.contains("sslmode=verify-full to localhost")
                && reason.contains("give the CA that signed it with `sslrootcert="),
            "{reason}"
        );
    }
}

#[test]
fn the_shared_state_store_connects_as_libpq_does_and_validate_names_the_modes() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    if server_certificate(&database).is_none() {
        return;
    }
    let workspace = Workspace::new();
    let state = format!(
        "{}&options=-csearch_path%3D{}",
        url(&database, "127.0.0.1", "sslmode=require"),
        database.schema
    );
    let output = tapline(workspace.dir.path(), &["history", "--state", &state]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // A key=value connection string works as the URL does.
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let name = database.rows("SELECT current_database() AS name");
    let pairs = format!(
        "host=127.0.0.1 port=5432 user=postgres dbname={} sslmode=require",
        name[0]["name"].as_str().unwrap()
    );
    assert_eq!(encrypted(&pairs, &sandbox), Ok(true));

    // An unknown mode is a validate error naming the accepted ones.
    workspace.write(
        "pipeline.yaml",
        "connection: {account_id: A, passcode_file: passcode.txt}\nsource:\n  database: {postgres: \"postgres://db/crm?sslmode=verify_full\"}\n  query: SELECT 1 AS identity\ntarget: {entity: user_profiles}\n",
    );
    let output = tapline(workspace.dir.path(), &["validate", "pipeline.yaml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("disable, allow, prefer, require, verify-ca, verify-full"),
        "{}",
        stderr(&output)
    );
}
