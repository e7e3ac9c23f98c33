//! The error type of this crate, and [`CompileError`], one finding of a
//! policy check (a report lists them all).

/// One problem in a policy, with the path to the field at fault, e.g.
/// `ruleGroups[1].rules.preRequest[3].conditions[0].values[2]: "10.0.0.0/33" is not a CIDR`.
///
/// Paths start at the spec of the resource being compiled: `ruleGroups[...]`
/// and `defaultActions` for a configuration and the groups it lists,
/// `destinations` and `tlsInterception` for an `EgressProxy`, and
/// `documents[i]` for a YAML file that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CompileError {
    /// Where the problem is.
    pub path: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl CompileError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> CompileError {
        CompileError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What went wrong: a compiled policy that cannot be loaded, or a request
/// whose destination or target has no safe canonical form.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON of the compiled-policy shape.
    #[error("not a compiled policy: {0}")]
    Malformed(String),
    /// Written by a newer or older format.
    #[error(
        "compiled policy format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The version in the document.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The content does not hash to the recorded hash (edited by hand or truncated).
    #[error(
        "compiled policy content hash is {actual} but the document records {recorded}; it was changed after compiling"
    )]
    HashMismatch {
        /// The hash recorded in the document.
        recorded: String,
        /// The hash of the content.
        actual: String,
    },
    /// The content does not compile (it was not produced by a compiler that validated it).
    #[error("compiled policy is invalid: {}", join(.0))]
    Invalid(Vec<CompileError>),
    /// A request's host cannot be canonicalised (see [`crate::host`]).
    #[error("invalid host \"{host}\": {reason}")]
    InvalidHost {
        /// The host as received (escaped).
        host: String,
        /// Why it is refused.
        reason: String,
    },
    /// A request target cannot be normalised safely (see [`crate::uri`]).
    #[error("invalid request target \"{target}\": {reason}")]
    InvalidTarget {
        /// The target as received (escaped).
        target: String,
        /// Why it is refused.
        reason: String,
    },
}

fn join(errors: &[CompileError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
