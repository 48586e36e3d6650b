//! Pipeline files: YAML → a checked [`Pipeline`], with every problem reported at once.
//!
//! Loading goes YAML text → positioned tree ([`yaml`]) → JSON Schema check ([`schema`]) →
//! serde types ([`file`]) → semantic checks ([`validate`]) → [`model::Pipeline`]. Code past
//! this module works from the model and never re-checks the file.

pub(crate) mod diagnostic;
pub(crate) mod file;
pub(crate) mod files;
pub mod location;
pub(crate) mod model;
mod notifications;
pub mod reference;
mod resolve;
pub mod schema;
mod validate;
pub mod yaml;

use std::path::{Path, PathBuf};

pub(crate) use diagnostic::Diagnostic;
pub(crate) use model::{Pipeline, Secret};
use model::{Source, Target};

/// Whether loading needs the connection's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// Resolve `${VAR}`s and `passcode_file`; unset ones are errors.
    Resolve,
    /// Do not read credentials (a `--sandbox` run replaces them); the connection must still exist.
    Ignore,
    /// Check what can be checked (`tapline validate`): an unset `${VAR}` or a secret file that
    /// does not exist is a warning that the run will need it, not an error.
    Check,
}

/// The result of loading one pipeline file.
#[derive(Debug)]
pub struct Loaded {
    /// The pipeline, when there is no error among the diagnostics.
    pub pipeline: Option<Pipeline>,
    /// Every problem found, errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
    /// The parts that loaded even when others did not, so their own checks still run.
    pub parts: Parts,
}

/// The source and target of a pipeline file, each present when its section is valid.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// The source file, resolved.
    pub source: Option<Source>,
    /// Where `source.path` is written.
    pub source_position: Option<yaml::Position>,
    /// The target.
    pub target: Option<Target>,
    /// The output mapping, and where each mapped column's `source` is written, then where
    /// each computed column's `value` (its template) is.
    pub output: Option<(model::OutputMapping, Vec<yaml::Position>)>,
    /// Which records a run sends, and where `send` is written.
    pub send: Option<(model::Send, yaml::Position)>,
}

/// Loads and checks one pipeline file. Never touches the network.
pub fn load_pipeline(path: &Path, credentials: Credentials) -> Loaded {
    validate::load(path, credentials)
}

/// The pipeline files a list of paths names: files as they are, folders by their `*.yaml`
/// and `*.yml` files except `connections.yaml`, in name order; and a problem for each path
/// that names nothing readable (the others are still listed, so every problem shows at once).
pub fn discover(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|entry| entry.path())
                        .filter(|file| is_pipeline_file(file))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(error) => problems.push(Diagnostic::error(
                    path,
                    None,
                    format!("cannot read folder: {error}"),
                )),
            }
        } else if path.exists() {
            files.push(path.clone());
        } else {
            problems.push(Diagnostic::error(path, None, "no such file or folder").with_hint(
                "give a pipeline file such as `pipelines/vip_profiles.yaml`, or a folder of them",
            ));
        }
    }
    (files, problems)
}

fn is_pipeline_file(path: &Path) -> bool {
    let is_yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    path.is_file() && is_yaml && stem != "connections"
}
