//! Why a command could not do its work: one error type with the exit code it means, printed
//! once (`error: ...`) where the command ends, as `just` does it.

use std::fmt::Display;

use super::Exit;
use super::terminal::errln;

/// A command's failure: a message for a person (with its hint, where there is one) and the
/// exit code it means.
#[derive(Debug)]
pub(super) struct Error {
    message: String,
    code: Exit,
}

impl Error {
    /// Bad arguments or configuration: exit 2.
    pub(super) fn usage(message: impl Display) -> Self {
        Error {
            message: message.to_string(),
            code: Exit::Usage,
        }
    }

    /// The work could not be done: exit 1.
    pub(super) fn failed(message: impl Display) -> Self {
        Error {
            message: message.to_string(),
            code: Exit::Failed,
        }
    }

    /// The exit code it means.
    pub(super) fn code(&self) -> Exit {
        self.code
    }
}

impl Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Prints a failure on stderr and gives its exit code: where a command ends, and where one
/// that goes on past it (the next pipeline of `tapline run`) reports it.
pub(super) fn report(error: &Error) -> Exit {
    errln!("error: {error}");
    error.code()
}

/// How a command ends: its exit code, or the failure that ended it.
pub(super) type Outcome = Result<Exit, Error>;

/// The exit code of a command's outcome, its failure printed.
pub(super) fn exit_of(outcome: Outcome) -> Exit {
    outcome.unwrap_or_else(|error| report(&error))
}
