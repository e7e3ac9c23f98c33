//! The operator's error type. Problems of the user's objects (a policy that
//! does not compile, a parent CA that cannot sign) are not errors: they are
//! status conditions. Errors are what a retry may fix: the API server, a
//! certificate that could not be generated.

/// What made a reconcile fail (it is requeued with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// A certificate could not be generated.
    #[error("certificate: {0}")]
    Certificate(#[from] egress_pki::Error),
    /// An object could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// An object lacks what the API server always sets (name, namespace).
    #[error("{0}")]
    Incomplete(&'static str),
    /// Objects rendered for a proxy could not all be applied (also in its
    /// status conditions, reason `ApplyFailed`).
    #[error("apply: {0}")]
    Apply(String),
    /// What a proxy renders for its clients could not all be applied (also
    /// in its `status.clients.message`).
    #[error("clients: {0}")]
    Clients(String),
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    /// What the apply or clean-up step said, or what went wrong with the
    /// finalizer itself.
    fn from(error: kube::runtime::finalizer::Error<Error>) -> Error {
        use kube::runtime::finalizer::Error as Finalizer;
        match error {
            Finalizer::ApplyFailed(e) | Finalizer::CleanupFailed(e) => e,
            other => Error::Finalizer(other.to_string()),
        }
    }
}

impl Error {
    /// Short reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::Finalizer(_) => "finalizer",
            Error::Certificate(_) => "certificate",
            Error::Encode(_) => "encoding",
            Error::Incomplete(_) => "incomplete_object",
            Error::Apply(_) => "apply",
            Error::Clients(_) => "clients",
        }
    }
}
