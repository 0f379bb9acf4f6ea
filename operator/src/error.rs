//! The crate's one error type.

/// Everything a reconcile or a render can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A storaged admin API call failed.
    #[error("storaged admin API: {0}")]
    Admin(#[from] crate::admin_client::AdminError),
    /// An object could not be (de)serialized.
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    /// The user's spec is invalid in a way the CRD schema could not catch.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// An object lacks a field Kubernetes always sets (name, namespace, uid).
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// A referenced object is missing or not ready yet.
    #[error("waiting for {0}")]
    NotReady(String),
    /// A finalizer step failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// A short, bounded label for metrics (never a message with user data).
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Admin(_) => "admin",
            Self::Serde(_) => "serde",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::MissingField(_) => "missing_field",
            Self::NotReady(_) => "not_ready",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
