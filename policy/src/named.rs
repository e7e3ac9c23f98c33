//! A resource's name with its spec: what the compiler and the lists take.

use serde::{Deserialize, Serialize};

/// A resource's name with its spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named<T> {
    /// `metadata.name`.
    pub name: String,
    /// `spec`.
    pub spec: T,
    /// The name decision logs and metrics show, when not `name` (a rule
    /// group imported from AWS keeps its AWS name there; see
    /// [`crate::objects::AWS_NAME_ANNOTATION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_name: Option<String>,
}

impl<T> Named<T> {
    /// Pairs a name with a spec.
    pub fn new(name: impl Into<String>, spec: T) -> Named<T> {
        Named {
            name: name.into(),
            spec,
            log_name: None,
        }
    }

    /// The same, shown as `log_name` in logs and metrics (when given). A
    /// name with a `/` is ignored: that is how the baseline's groups show
    /// (`ClusterProxyRuleGroup/<name>`), which a namespaced group's
    /// annotation must not imitate.
    pub fn with_log_name(mut self, log_name: Option<String>) -> Named<T> {
        self.log_name = log_name.filter(|n| !n.is_empty() && *n != self.name && !n.contains('/'));
        self
    }

    /// The name logs and metrics show.
    pub fn log_name(&self) -> &str {
        self.log_name.as_deref().unwrap_or(&self.name)
    }
}
