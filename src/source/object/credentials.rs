//! Where an object source's credentials, region and endpoint come from: the standard AWS
//! chain, as the AWS CLI reads it.
//!
//! In order: `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
//! a profile's static keys (`AWS_PROFILE`, else `default`, in `~/.aws/credentials` or
//! `AWS_SHARED_CREDENTIALS_FILE`, its region and `endpoint_url` in `~/.aws/config` or
//! `AWS_CONFIG_FILE`); web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`, as
//! Kubernetes service accounts give); a container's credentials
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`); and last the instance
//! metadata service. `AWS_REGION` (or `AWS_DEFAULT_REGION`) and `AWS_ENDPOINT_URL` (for
//! S3-compatible stores) are read as the CLI reads them. A plain `http://` endpoint is
//! allowed only on this machine's loopback, unless `AWS_ALLOW_HTTP=true`.

use std::path::PathBuf;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ClientOptions, RetryConfig};

/// Where a client's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    Variables,
    /// A profile's keys in a credentials file.
    Profile { name: String, file: PathBuf },
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`.
    WebIdentity,
    /// The container's credentials endpoint.
    Container,
    /// The instance metadata service (EC2): asked when nothing else is set.
    InstanceMetadata,
}

/// A profile read from the AWS CLI's files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Profile {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    /// A setting that needs the AWS CLI (`role_arn`, `sso_session`, `credential_process`).
    needs_cli: Option<String>,
}

/// The chain as this process's environment and files give it.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    source: Source,
    profile: Option<Profile>,
    /// The profile asked for by `AWS_PROFILE`, when its keys were not found.
    profile_problem: Option<String>,
    endpoint: Option<String>,
    allow_http: bool,
}

impl Chain {
    /// Reads the chain from the environment and the AWS CLI's files.
    pub(crate) fn from_env() -> Chain {
        let set = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let asked_profile = set("AWS_PROFILE");
        let profile_name = asked_profile.clone().unwrap_or_else(|| "default".into());
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let credentials_file = set("AWS_SHARED_CREDENTIALS_FILE")
            .map_or_else(|| home.join(".aws/credentials"), PathBuf::from);
        let config_file =
            set("AWS_CONFIG_FILE").map_or_else(|| home.join(".aws/config"), PathBuf::from);
        let profile = read_profile(&profile_name, &credentials_file, &config_file);
        let has_keys = |profile: &Profile| {
            profile.access_key_id.is_some() && profile.secret_access_key.is_some()
        };
        let source = if set("AWS_ACCESS_KEY_ID").is_some() {
            Source::Variables
        } else if profile.as_ref().is_some_and(has_keys) {
            Source::Profile {
                name: profile_name.clone(),
                file: credentials_file.clone(),
            }
        } else if set("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
            Source::WebIdentity
        } else if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || set("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
        {
            Source::Container
        } else {
            Source::InstanceMetadata
        };
        let profile_problem = asked_profile.and_then(|name| match &profile {
            None => Some(format!(
                "AWS_PROFILE names `{name}`, which is in neither {} nor {}",
                credentials_file.display(),
                config_file.display()
            )),
            Some(found) if !has_keys(found) => Some(match &found.needs_cli {
                Some(setting) => format!(
                    "profile `{name}` gets its credentials through `{setting}`, which tapline does not run: export them with `aws configure export-credentials --profile {name} --format env`"
                ),
                None => format!("profile `{name}` has no aws_access_key_id and aws_secret_access_key"),
            }),
            Some(_) => None,
        });
        let endpoint = set("AWS_ENDPOINT_URL_S3")
            .or_else(|| set("AWS_ENDPOINT_URL"))
            .or_else(|| profile.as_ref().and_then(|p| p.endpoint_url.clone()));
        let allow_http =
            set("AWS_ALLOW_HTTP").is_some_and(|value| value.eq_ignore_ascii_case("true"));
        Chain {
            source,
            profile,
            profile_problem,
            endpoint,
            allow_http,
        }
    }

    /// A client of `bucket`; `Err`: why none can be made (in words).
    pub(crate) fn client(&self, bucket: &str) -> Result<AmazonS3, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(problem) = &self.profile_problem
            && self.source != Source::Variables
        {
            return Err(problem.clone());
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(15))
            .with_timeout(Duration::from_secs(120));
        if let Some(endpoint) = &self.endpoint {
            let plain = endpoint
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
            if plain && !self.allow_http && !is_loopback(endpoint) {
                return Err(format!(
                    "the endpoint `{endpoint}` is plain http:// to another machine, which would send the data and the requests' signatures unencrypted: use https://, or set AWS_ALLOW_HTTP=true where the network is private"
                ));
            }
            options = options.with_allow_http(plain);
            builder = builder.with_endpoint(endpoint);
        }
        if let (Source::Profile { .. }, Some(profile)) = (&self.source, &self.profile) {
            if let Some(key) = &profile.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &profile.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(token) = &profile.session_token {
                builder = builder.with_token(token);
            }
        }
        let region_set = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
        if !region_set && let Some(region) = self.profile.as_ref().and_then(|p| p.region.as_ref()) {
            builder = builder.with_region(region);
        }
        builder
            .with_client_options(options)
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|error| error.to_string())
    }

    /// Where the credentials came from, for a message (names, never values).
    pub(crate) fn describe(&self) -> String {
        match &self.source {
            Source::Variables => "the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            Source::Profile { name, file } => {
                format!("profile `{name}` of {}", file.display())
            }
            Source::WebIdentity => {
                "the web identity in AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN".into()
            }
            Source::Container => "the container's credentials".into(),
            Source::InstanceMetadata => "the instance's role (instance metadata)".into(),
        }
    }

    /// Whether `cause`, an error of the store, says no credentials were found: nothing
    /// else was set, and the instance metadata service, asked last, did not answer.
    pub(crate) fn found_none(&self, cause: &str) -> bool {
        self.source == Source::InstanceMetadata
            && ["/latest/api/token", "/latest/meta-data", "credential"]
                .iter()
                .any(|sign| cause.contains(sign))
    }

    /// What tapline looked at, for "no credentials found".
    pub(crate) fn looked_at(&self) -> String {
        "tapline looked at AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE (else `default`) in ~/.aws/credentials or AWS_SHARED_CREDENTIALS_FILE, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI, and last the instance metadata service, which did not answer: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE".into()
    }
}

/// Whether an endpoint's host is this machine.
fn is_loopback(endpoint: &str) -> bool {
    let Ok(url) = url::Url::parse(endpoint) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

/// The profile `name` from the credentials file and the config file (`[profile NAME]`
/// there, `[NAME]` for the default); `None` when neither has it.
fn read_profile(
    name: &str,
    credentials_file: &std::path::Path,
    config_file: &std::path::Path,
) -> Option<Profile> {
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let from_credentials = read_section(credentials_file, name);
    let from_config = read_section(config_file, &config_section);
    if from_credentials.is_none() && from_config.is_none() {
        return None;
    }
    let settings: Vec<(String, String)> = from_credentials
        .into_iter()
        .flatten()
        .chain(from_config.into_iter().flatten())
        .collect();
    let get = |key: &str| {
        settings
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
    Some(Profile {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: get("region"),
        endpoint_url: get("endpoint_url"),
        needs_cli: [
            "role_arn",
            "sso_session",
            "sso_start_url",
            "credential_process",
        ]
        .into_iter()
        .find(|key| get(key).is_some())
        .map(str::to_string),
    })
}

/// The `key = value` lines of section `[section]` of an INI file; `None` when the file or
/// the section is missing.
fn read_section(file: &std::path::Path, section: &str) -> Option<Vec<(String, String)>> {
    let bytes = crate::config::files::read_limited(file, 1024 * 1024).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut inside = false;
    let mut found = None::<Vec<(String, String)>>;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.trim() == section;
            if inside {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if inside
            && let Some((key, value)) = line.split_once('=')
            && let Some(settings) = found.as_mut()
        {
            settings.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n[crm]\n# the CRM team\naws_access_key_id=AKIACRM\naws_secret_access_key=s2\naws_session_token = t2\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n[profile crm]\nregion = ap-south-1\nendpoint_url = http://127.0.0.1:9000\n[profile sso]\nsso_session = corp\n",
        )
        .unwrap();
        let crm = read_profile("crm", &credentials, &config).unwrap();
        assert_eq!(crm.access_key_id.as_deref(), Some("AKIACRM"));
        assert_eq!(crm.session_token.as_deref(), Some("t2"));
        assert_eq!(crm.region.as_deref(), Some("ap-south-1"));
        assert_eq!(crm.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        let default = read_profile("default", &credentials, &config).unwrap();
        assert_eq!(default.region.as_deref(), Some("eu-west-1"));
        let sso = read_profile("sso", &credentials, &config).unwrap();
        assert_eq!(sso.needs_cli.as_deref(), Some("sso_session"));
        assert_eq!(sso.access_key_id, None);
        assert_eq!(read_profile("absent", &credentials, &config), None);
    }

    #[test]
    fn plain_http_only_on_this_machine() {
        for (endpoint, loopback) in [
            ("http://127.0.0.1:9000", true),
            ("http://localhost:9000", true),
            ("http://[::1]:9000", true),
            ("http://minio.internal:9000", false),
            ("http://10.0.0.5", false),
        ] {
            assert_eq!(is_loopback(endpoint), loopback, "{endpoint}");
        }
    }
}
