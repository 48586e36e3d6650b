//! What a config file refers to outside itself: environment variables (`${NAME}`), secrets
//! given inline or in a file, and URLs. The connections' passcodes, SMTP passwords and
//! webhook secrets are all resolved by [`secret`].

use std::path::Path;

use super::Credentials;
use super::diagnostic::Diagnostic;
use super::model::Secret;
use super::yaml::Position;

/// An unset variable or a broken `${`.
pub(super) struct InterpolationProblem {
    pub(super) message: String,
    pub(super) hint: String,
    /// The variable that is not set, if that is the problem.
    pub(super) unset: Option<String>,
}

/// Resolves the `${NAME}`s of a config value: `Ok(Some(text))`; `Ok(None)` when a variable
/// is unset and `credentials` is [`Credentials::Check`] (reported as a warning: the run will
/// need it); `Err` after reporting an error.
pub(super) fn resolved(
    text: &str,
    credentials: Credentials,
    problem_at: (&Path, Option<Position>),
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<String>, ()> {
    let (file, at) = problem_at;
    match interpolate(text) {
        Ok(text) => Ok(Some(text)),
        Err(problem) if credentials == Credentials::Check && problem.unset.is_some() => {
            diagnostics.push(
                Diagnostic::warning(
                    file,
                    at,
                    format!("{}; `tapline run` will need it", problem.message),
                )
                .with_hint(problem.hint),
            );
            Ok(None)
        }
        Err(problem) => {
            diagnostics.push(Diagnostic::error(file, at, problem.message).with_hint(problem.hint));
            Err(())
        }
    }
}

/// Replaces every `${NAME}` with the environment variable `NAME`.
pub(super) fn interpolate(text: &str) -> Result<String, InterpolationProblem> {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        output.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(InterpolationProblem {
                message: format!("`${{` without a closing `}}` in `{text}`"),
                hint: "write `${NAME}`".into(),
                unset: None,
            });
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(value) => output.push_str(&value),
            Err(_) => {
                return Err(InterpolationProblem {
                    message: format!("environment variable `{name}` is not set"),
                    hint: format!(
                        "export {name}=... before running tapline (under systemd: `Environment=` or `EnvironmentFile=`)"
                    ),
                    unset: Some(name.to_string()),
                });
            }
        }
        rest = &after[end + 1..];
    }
    output.push_str(rest);
    Ok(output)
}

/// A secret as a config file gives it: inline in `field` (with `${NAME}`s), or in a file
/// named by `{field}_file`.
pub(super) struct SecretField<'a> {
    /// The key: `passcode`, `password`, `secret`.
    pub(super) field: &'a str,
    /// What it is, for messages: "the passcode of connection `prod`".
    pub(super) what: &'a str,
    /// The inline value, if given.
    pub(super) value: Option<&'a str>,
    /// The file's path, if given (relative to `file`'s folder).
    pub(super) value_file: Option<&'a str>,
    /// A value that is public, not a secret (the sandbox's documented passcode for a
    /// sandbox on this machine): written in the file, it is no warning.
    pub(super) public: bool,
}

/// Where a [`SecretField`] is written, to locate its problems.
pub(super) struct SecretSite<'a> {
    /// The config file that gives it.
    pub(super) file: &'a Path,
    /// The position of one of its keys.
    pub(super) at: &'a dyn Fn(&str) -> Option<Position>,
}

/// Resolves a secret: `Ok(None)` when neither form is given, `Err` after reporting a
/// problem. It warns of a secret written in the file itself and of a secret file others
/// can read. With [`Credentials::Ignore`] nothing is read, and a given secret is empty.
pub(super) fn secret(
    given: &SecretField<'_>,
    site: &SecretSite<'_>,
    credentials: Credentials,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<Secret>, ()> {
    let SecretField {
        field,
        what,
        value,
        value_file,
        public,
    } = *given;
    let file_field = format!("{field}_file");
    let error = |key: &str, message: String| Diagnostic::error(site.file, (site.at)(key), message);
    if value.is_some() && value_file.is_some() {
        diagnostics.push(
            error(
                &file_field,
                format!("give either `{field}` or `{file_field}`, not both"),
            )
            .with_hint(format!("keep `{file_field}` and remove `{field}`")),
        );
        return Err(());
    }
    if let Some(value) = value
        && !value.contains("${")
        && !public
    {
        diagnostics.push(
            Diagnostic::warning(
                site.file,
                (site.at)(field),
                format!("{what} is written in the file"),
            )
            .with_hint(format!(
                "a file ends up in version control; use `{field}: ${{NAME}}` or `{file_field}`"
            )),
        );
    }
    if credentials == Credentials::Ignore {
        return Ok(value.or(value_file).map(|_| Secret::new("")));
    }
    // Under `Check`, what the run will need but this machine lacks is a warning, and the
    // secret is empty.
    let unknown = Ok(Some(Secret::new("")));
    let interpolated = |key: &str, text: &str, diagnostics: &mut Vec<Diagnostic>| {
        resolved(text, credentials, (site.file, (site.at)(key)), diagnostics)
    };
    let text = match (value, value_file) {
        (Some(value), _) => match interpolated(field, value, diagnostics)? {
            Some(text) => text,
            None => return unknown,
        },
        (None, Some(path)) => {
            let Some(path) = interpolated(&file_field, path, diagnostics)? else {
                return unknown;
            };
            let path = site.file.parent().unwrap_or(Path::new("")).join(path);
            match secret_file(given, site, credentials, &path, diagnostics)? {
                Some(text) => text,
                None => return unknown,
            }
        }
        (None, None) => return Ok(None),
    };
    if text.is_empty() {
        diagnostics.push(error(field, format!("{what} is empty")).with_hint(format!(
            "set the environment variable `{field}:` names (it is empty), or give `{file_field}: /path/to/file`"
        )));
        return Err(());
    }
    Ok(Some(Secret::new(text)))
}

/// A secret's file, read: `Ok(None)` when it does not exist yet under
/// [`Credentials::Check`] (a warning says the run will need it); a warning when every user
/// can read it; an error when it is empty or cannot be read.
fn secret_file(
    given: &SecretField<'_>,
    site: &SecretSite<'_>,
    credentials: Credentials,
    path: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<String>, ()> {
    let (field, what) = (given.field, given.what);
    let file_field = format!("{field}_file");
    let error = |key: &str, message: String| Diagnostic::error(site.file, (site.at)(key), message);
    if credentials == Credentials::Check && !path.exists() {
        diagnostics.push(
            Diagnostic::warning(
                site.file,
                (site.at)(&file_field),
                format!(
                    "{field} file `{}` does not exist; `tapline run` will need it",
                    path.display()
                ),
            )
            .with_hint("a relative path is relative to the file that names it"),
        );
        return Ok(None);
    }
    if super::files::readable_by_everyone(path) {
        diagnostics.push(
            Diagnostic::warning(
                site.file,
                (site.at)(&file_field),
                format!(
                    "{field} file `{}` can be read by every user of this machine",
                    path.display()
                ),
            )
            .with_hint(format!("make it private: chmod 600 {}", path.display())),
        );
    }
    match super::files::read_text_limited(path, super::files::MAX_SECRET_BYTES) {
        Ok(text) if text.trim().is_empty() => {
            diagnostics.push(
                error(
                    &file_field,
                    format!("{field} file `{}` is empty", path.display()),
                )
                .with_hint(format!(
                    "write {what} into `{}` (one line), or give it as `{field}: ${{NAME}}` from the environment",
                    path.display()
                )),
            );
            Err(())
        }
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(problem) => {
            diagnostics.push(
                error(
                    &file_field,
                    format!("cannot read {field} file `{}`: {problem}", path.display()),
                )
                .with_hint("a relative path is relative to the file that names it"),
            );
            Err(())
        }
    }
}

/// Whether `text` is an http(s) URL with a host.
pub(super) fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

/// Whether a URL is `http://` to a host other than this machine (loopback, `localhost`).
pub(super) fn is_plain_http_off_this_machine(url: &str) -> bool {
    url.starts_with("http://") && !is_loopback_http(url)
}

/// Whether a URL is `http://` to this machine (loopback, `localhost`): a local sandbox.
pub(super) fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_environment_variables() {
        // PATH is set in every test environment.
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(
            interpolate("a-${PATH}-b").ok().as_deref(),
            Some(format!("a-{path}-b").as_str())
        );
        assert_eq!(interpolate("plain").ok().as_deref(), Some("plain"));
        let unset = interpolate("${TAPLINE_SURELY_UNSET_VARIABLE}").expect_err("unset");
        assert!(unset.message.contains("TAPLINE_SURELY_UNSET_VARIABLE"));
        assert!(interpolate("${OPEN").is_err());
    }
}
