//! A problem found in a pipeline or connections file, with where it is and how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::yaml::Position;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The pipeline still loads, but something deserves attention.
    Warning,
    /// The pipeline cannot run.
    Error,
}

/// One problem in a config file, printed as `file:line:col: error: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub position: Option<Position>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(file: &Path, position: Option<Position>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            position,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at a position.
    pub fn warning(file: &Path, position: Option<Position>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, position, message)
        }
    }

    /// Adds a hint on how to fix the problem.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // A problem of the whole file (missing, unreadable) has no place in it to point at.
        match self.position {
            Some(position) => write!(
                f,
                "{}:{}:{}: {label}: {}",
                self.file.display(),
                position.line,
                position.col,
                self.message
            )?,
            None => write!(f, "{}: {label}: {}", self.file.display(), self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            (
                strsim::levenshtein(&word, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let fields = ["thread_count", "skip_invalid_records", "schedule", "source"];
        assert_eq!(did_you_mean("thred_count", fields), Some("thread_count"));
        assert_eq!(did_you_mean("Schedule", fields), Some("schedule"));
        assert_eq!(did_you_mean("sources", fields), Some("source"));
        assert_eq!(did_you_mean("colour", fields), None);
        assert_eq!(
            did_you_mean("user_event", ["user_profiles", "user_events"]),
            Some("user_events")
        );
    }
}
