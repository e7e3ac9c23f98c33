//! Errors of this crate.

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

/// Why a serialized compiled policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
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
}

fn join(errors: &[CompileError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
