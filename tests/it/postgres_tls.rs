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

/// Runs a pipeline sending the one row `query` returns from `database_url`: the profile it
/// made, or the summary of a run that failed.
fn profile_from(database_url: &str, query: &str, sandbox: &TestSandbox) -> Result<Value, Value> {
    let workspace = Workspace::new();
    let (account, _) = sandbox.sandbox.credentials();
    workspace.write(
        "pipeline.yaml",
        format!(
            "connection:\n  account_id: {account}\n  passcode_file: passcode.txt\n  endpoint: {}\nsource:\n  database: {{postgres: \"{database_url}\"}}\n  query: {query}\ntarget: {{entity: user_profiles}}\n",
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
    Ok(Value::Object(
        sandbox.sandbox.profile(identity.as_str().unwrap()).unwrap(),
    ))
}

/// Whether a connection to `database_url` was encrypted, or the summary of a run that failed.
fn encrypted(database_url: &str, sandbox: &TestSandbox) -> Result<bool, Value> {
    let query = "SELECT 'tls-' || pg_backend_pid() AS identity, ssl AS \"Encrypted\" FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    profile_from(database_url, query, sandbox).map(|profile| profile["Encrypted"] == true)
}

/// The folder `.ci/run` fills with a CA the test server trusts (`ssl_ca_file`) and a
/// certificate it signed for the role `tapline_cert`, which must show one (`hostssl ... cert`
/// in `pg_hba.conf`): `client.crt` and `client.key`.
fn client_ca() -> Option<std::path::PathBuf> {
    match std::env::var_os("TAPLINE_TEST_POSTGRES_CLIENT_CA") {
        Some(folder) => Some(folder.into()),
        None => {
            assert!(
                std::env::var_os("TAPLINE_TEST_POSTGRES_REQUIRED").is_none(),
                "TAPLINE_TEST_POSTGRES_CLIENT_CA is unset: run the tests through .ci/run, which sets up the client CA"
            );
            eprintln!("skipped: TAPLINE_TEST_POSTGRES_CLIENT_CA is unset (.ci/run sets it up)");
            None
        }
    }
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

#[test]
fn a_client_certificate_is_shown_to_a_server_that_asks_for_one() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    let Some(server_certificate) = server_certificate(&database) else {
        return;
    };
    let Some(client_ca) = client_ca() else {
        return;
    };
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let as_cert_role = |host: &str, parameters: &str| {
        url(&database, host, parameters).replacen("postgres@", "tapline_cert@", 1)
    };
    let (cert, key) = (client_ca.join("client.crt"), client_ca.join("client.key"));
    let client = format!("sslcert={}&sslkey={}", cert.display(), key.display());
    let who = "SELECT current_user AS identity, ssl AS \"Encrypted\" FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

    // The role may log in only with a certificate the server's CA signed: tapline shows it,
    // with the server's own certificate checked or not.
    let profile = profile_from(
        &as_cert_role("127.0.0.1", &format!("sslmode=require&{client}")),
        who,
        &sandbox,
    )
    .unwrap_or_else(|summary| panic!("{summary}"));
    assert_eq!(profile["Encrypted"], true, "{profile}");
    assert!(
        sandbox.sandbox.profile("tapline_cert").is_some(),
        "{:?}",
        sandbox.sandbox.records("profile")
    );
    profile_from(
        &as_cert_role(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={server_certificate}&{client}"),
        ),
        who,
        &sandbox,
    )
    .unwrap_or_else(|summary| panic!("{summary}"));

    // Without it the server refuses, and the run says what the server said.
    let refused =
        profile_from(&as_cert_role("127.0.0.1", "sslmode=require"), who, &sandbox).unwrap_err();
    let reason = refused["stop_reason"].to_string();
    assert!(
        reason.contains("requires a valid client certificate"),
        "{reason}"
    );

    // A key that is not the certificate's is refused before the server is asked (the server's
    // own certificate, a version 3 one, with the client's key).
    let refused = profile_from(
        &as_cert_role(
            "127.0.0.1",
            &format!(
                "sslmode=require&sslcert={server_certificate}&sslkey={}",
                key.display()
            ),
        ),
        who,
        &sandbox,
    )
    .unwrap_err();
    let reason = refused["stop_reason"].to_string();
    assert!(
        reason.contains(&format!(
            "`sslkey={}` is not the key of the client certificate `sslcert={server_certificate}`",
            key.display()
        )),
        "{reason}"
    );

    // A certificate file that is not there is named.
    let missing = client_ca.join("missing.crt");
    let refused = profile_from(
        &as_cert_role(
            "127.0.0.1",
            &format!(
                "sslmode=require&sslcert={}&sslkey={}",
                missing.display(),
                key.display()
            ),
        ),
        who,
        &sandbox,
    )
    .unwrap_err();
    let reason = refused["stop_reason"].to_string();
    assert!(
        reason.contains(&format!("cannot read `sslcert={}`", missing.display())),
        "{reason}"
    );
}
