//! What is known about a request when a phase is evaluated.
//!
//! The gateway fills in more as the request progresses: the destination IP
//! after resolution, the HTTP request when the request is plain HTTP or the
//! tunnel is intercepted, the response once its head arrives. Anything left
//! `None` is a missing value, which no condition matches.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::HeaderMap;
use jiff::Timestamp;

use crate::domain::Domain;
use crate::key::{IpKey, NumberKey, TextKey};

/// The request as the policy sees it.
#[derive(Clone, Debug, Default)]
pub struct RequestContext<'a> {
    /// When the request arrived (`request:Time`).
    pub time: Option<Timestamp>,
    /// The client's address (`request:SourceIp`).
    pub source_ip: Option<IpAddr>,
    /// The client's port (`request:SourcePort`).
    pub source_port: Option<u16>,
    /// The cluster name (`request:SourceVpc`).
    pub source_vpc: Option<&'a str>,
    /// The listener the client came in on (`request:SourceVpce`).
    pub source_vpce: Option<&'a str>,
    /// The client pod, when the gateway knows it.
    pub source: Option<&'a SourceIdentity>,
    /// `http` for absolute-form requests, `https` for CONNECT (`request:Protocol`).
    pub protocol: Option<&'a str>,
    /// The requested name (`request:DestinationDomain`).
    pub destination_domain: Option<Domain>,
    /// The requested port (`request:DestinationPort`).
    pub destination_port: Option<u16>,
    /// The address that will be dialed (`request:DestinationIp`), once resolved.
    pub destination_ip: Option<IpAddr>,
    /// The HTTP request, when plain HTTP or intercepted.
    pub request: Option<HttpRequest<'a>>,
    /// The upstream response head.
    pub response: Option<HttpResponse<'a>>,
}

/// The client pod's identity, found from its source IP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceIdentity {
    /// Namespace (`request:SourceNamespace`, also `request:SourceAccount`).
    pub namespace: String,
    /// Service account (`request:SourceServiceAccount`).
    pub service_account: String,
    /// Pod name (`request:SourcePod`).
    pub pod: String,
    /// Pod labels (`request:SourcePodLabel/<key>`).
    pub labels: BTreeMap<String, String>,
}

/// The parts of an HTTP request that conditions read.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    /// The method (`request:Http:Method`).
    pub method: &'a str,
    /// Path and query (`request:Http:Uri`).
    pub uri: &'a str,
    /// Request headers (`request:Http:Header/<Name>`, `UserAgent`, `ContentType`).
    pub headers: &'a HeaderMap,
}

/// The parts of an HTTP response that conditions read.
#[derive(Clone, Copy, Debug)]
pub struct HttpResponse<'a> {
    /// The status code (`response:Http:StatusCode`).
    pub status: u16,
    /// Response headers (`response:Http:Header/<Name>`, `ContentType`).
    pub headers: &'a HeaderMap,
}

impl RequestContext<'_> {
    /// Calls `f` with each value of a text key until it returns true. Headers
    /// with several values give each; values that are not valid text are skipped.
    pub(crate) fn for_each_text(&self, key: &TextKey, mut f: impl FnMut(&str) -> bool) {
        use http::header::{CONTENT_TYPE, USER_AGENT};
        let request_header = |name| self.request.map(|r| (r.headers, name));
        let response_header = |name| self.response.map(|r| (r.headers, name));
        let header: Option<(&HeaderMap, &http::HeaderName)> = match key {
            TextKey::HttpUserAgent => request_header(&USER_AGENT),
            TextKey::HttpContentType => request_header(&CONTENT_TYPE),
            TextKey::RequestHeader(name) => request_header(name),
            TextKey::ResponseContentType => response_header(&CONTENT_TYPE),
            TextKey::ResponseHeader(name) => response_header(name),
            _ => {
                if let Some(value) = self.single_text(key) {
                    f(value);
                }
                return;
            }
        };
        let Some((headers, name)) = header else {
            return;
        };
        for value in headers.get_all(name) {
            if let Ok(text) = value.to_str()
                && f(text)
            {
                return;
            }
        }
    }

    fn single_text(&self, key: &TextKey) -> Option<&str> {
        match key {
            TextKey::SourceAccount | TextKey::SourceNamespace => {
                self.source.map(|s| s.namespace.as_str())
            }
            TextKey::SourceServiceAccount => self.source.map(|s| s.service_account.as_str()),
            TextKey::SourcePod => self.source.map(|s| s.pod.as_str()),
            TextKey::SourcePodLabel(label) => self
                .source
                .and_then(|s| s.labels.get(label))
                .map(String::as_str),
            TextKey::SourceVpc => self.source_vpc,
            TextKey::SourceVpce => self.source_vpce,
            TextKey::Protocol => self.protocol,
            TextKey::HttpMethod => self.request.map(|r| r.method),
            TextKey::HttpUri => self.request.map(|r| r.uri),
            TextKey::HttpUserAgent
            | TextKey::HttpContentType
            | TextKey::RequestHeader(_)
            | TextKey::ResponseContentType
            | TextKey::ResponseHeader(_) => None,
        }
    }

    pub(crate) fn number(&self, key: NumberKey) -> Option<i64> {
        match key {
            NumberKey::SourcePort => self.source_port.map(i64::from),
            NumberKey::DestinationPort => self.destination_port.map(i64::from),
            NumberKey::StatusCode => self.response.map(|r| i64::from(r.status)),
        }
    }

    /// IPv4-mapped IPv6 addresses are compared as the IPv4 they carry.
    pub(crate) fn ip(&self, key: IpKey) -> Option<IpAddr> {
        match key {
            IpKey::SourceIp => self.source_ip,
            IpKey::DestinationIp => self.destination_ip,
        }
        .map(|ip| ip.to_canonical())
    }
}
