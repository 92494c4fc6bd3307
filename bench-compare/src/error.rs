//! One error type for the whole tool: a message that carries its context,
//! innermost cause last.

use std::fmt;

/// An error with the story of what was being done when it happened.
#[derive(Debug)]
pub(crate) struct Error(String);

/// This crate's result.
pub(crate) type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error that has no cause below it.
    pub(crate) fn msg(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Adds what was being done to any error that can be displayed.
pub(crate) trait Context<T> {
    /// Wraps the error as "`what`: `cause`"; `what` is only built on error.
    fn context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|cause| Error(format!("{}: {cause}", what().into())))
    }
}
