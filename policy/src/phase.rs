//! The three evaluation phases.

use serde::{Deserialize, Serialize};

/// When rules are evaluated; phases always run in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// Before the destination name is resolved.
    #[serde(rename = "PreDNS")]
    PreDns,
    /// After resolution, before the request is sent upstream.
    #[serde(rename = "PreREQUEST")]
    PreRequest,
    /// After the upstream response head arrives, before it is returned.
    #[serde(rename = "PostRESPONSE")]
    PostResponse,
}

impl Phase {
    /// All phases in evaluation order.
    pub const ALL: [Phase; 3] = [Phase::PreDns, Phase::PreRequest, Phase::PostResponse];

    /// The name used in logs and metrics (the cloud service's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreDns => "PreDNS",
            Phase::PreRequest => "PreREQUEST",
            Phase::PostResponse => "PostRESPONSE",
        }
    }

    /// The field name of this phase in a rule group's `rules` and in `defaultActions`.
    pub fn field(self) -> &'static str {
        match self {
            Phase::PreDns => "preDNS",
            Phase::PreRequest => "preRequest",
            Phase::PostResponse => "postResponse",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
