//! How errors read in logs: the whole chain of causes on one line (`cannot write: database
//! query failed: save call starts: database or disk is full`), since a top-level message alone
//! ("database query failed") does not tell an IT person what to fix.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, separated by `: `.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        write!(f, "{last}")?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            // Some errors repeat their source's message in their own; print it once.
            if !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database query failed: save call starts")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("error returned from database: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_its_parents_message_is_shown_once() {
        let repeated = Repeats(std::io::Error::other(
            "attempt to write a readonly database",
        ));
        assert_eq!(
            Chain(&repeated).to_string(),
            "error returned from database: attempt to write a readonly database"
        );
    }

    #[test]
    fn every_cause_is_shown() {
        let error = Outer(std::io::Error::other("database or disk is full"));
        assert_eq!(
            Chain(&error).to_string(),
            "database query failed: save call starts: database or disk is full"
        );
    }
}
