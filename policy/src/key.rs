//! Condition keys, each tied to the type of its value and the first phase
//! in which that value is known.
//!
//! The key's type is part of the enum itself ([`ConditionKey::Text`],
//! [`ConditionKey::Number`], ...), so compiled conditions cannot pair a key with
//! a matcher of another type.

use http::HeaderName;

use crate::phase::Phase;

/// Value types of condition keys; each operator family fits one or two of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// Case-sensitive text (methods, URIs, header values, identities).
    String,
    /// A DNS name: case-insensitive, no trailing dot, leading-dot suffix match.
    Domain,
    /// An integer (ports, status codes).
    Number,
    /// An IPv4 or IPv6 address.
    Ip,
    /// The time the request arrived.
    Time,
}

impl ValueType {
    /// Lower-case name used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Domain => "domain",
            ValueType::Number => "number",
            ValueType::Ip => "IP address",
            ValueType::Time => "time",
        }
    }
}

/// A parsed condition key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConditionKey {
    /// A key whose value is text.
    Text(TextKey),
    /// `request:DestinationDomain`.
    DestinationDomain,
    /// A key whose value is an integer.
    Number(NumberKey),
    /// A key whose value is an IP address.
    Ip(IpKey),
    /// `request:Time`.
    Time,
}

/// Keys whose value is text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TextKey {
    /// `request:SourceAccount`: the client's namespace.
    SourceAccount,
    /// `request:SourceVpc`: the cluster name.
    SourceVpc,
    /// `request:SourceVpce`: the listener, `<proxy>-http` or `<proxy>-https`.
    SourceVpce,
    /// `request:Protocol`: `http` (absolute-form) or `https` (CONNECT).
    Protocol,
    /// `request:Http:Uri`: the request target's path and query.
    HttpUri,
    /// `request:Http:Method`.
    HttpMethod,
    /// `request:Http:UserAgent`.
    HttpUserAgent,
    /// `request:Http:ContentType`.
    HttpContentType,
    /// `request:Http:Header/<Name>`; the name is stored lower-case.
    RequestHeader(HeaderName),
    /// `response:Http:ContentType`.
    ResponseContentType,
    /// `response:Http:Header/<Name>`.
    ResponseHeader(HeaderName),
    /// `request:SourceNamespace`.
    SourceNamespace,
    /// `request:SourceServiceAccount`.
    SourceServiceAccount,
    /// `request:SourcePod`.
    SourcePod,
    /// `request:SourcePodLabel/<key>`.
    SourcePodLabel(String),
}

/// Keys whose value is an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumberKey {
    /// `request:SourcePort`.
    SourcePort,
    /// `request:DestinationPort`.
    DestinationPort,
    /// `response:Http:StatusCode`.
    StatusCode,
}

/// Keys whose value is an IP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpKey {
    /// `request:SourceIp`.
    SourceIp,
    /// `request:DestinationIp`: known once the name is resolved.
    DestinationIp,
}

const REQUEST_HEADER: &str = "request:Http:Header/";
const RESPONSE_HEADER: &str = "response:Http:Header/";
const POD_LABEL: &str = "request:SourcePodLabel/";

/// Keys without a parameter, with their spelling.
const FIXED_KEYS: &[(&str, ConditionKey)] = &[
    (
        "request:SourceAccount",
        ConditionKey::Text(TextKey::SourceAccount),
    ),
    ("request:SourceVpc", ConditionKey::Text(TextKey::SourceVpc)),
    (
        "request:SourceVpce",
        ConditionKey::Text(TextKey::SourceVpce),
    ),
    ("request:Time", ConditionKey::Time),
    ("request:SourceIp", ConditionKey::Ip(IpKey::SourceIp)),
    (
        "request:DestinationIp",
        ConditionKey::Ip(IpKey::DestinationIp),
    ),
    (
        "request:SourcePort",
        ConditionKey::Number(NumberKey::SourcePort),
    ),
    (
        "request:DestinationPort",
        ConditionKey::Number(NumberKey::DestinationPort),
    ),
    ("request:Protocol", ConditionKey::Text(TextKey::Protocol)),
    ("request:DestinationDomain", ConditionKey::DestinationDomain),
    ("request:Http:Uri", ConditionKey::Text(TextKey::HttpUri)),
    (
        "request:Http:Method",
        ConditionKey::Text(TextKey::HttpMethod),
    ),
    (
        "request:Http:UserAgent",
        ConditionKey::Text(TextKey::HttpUserAgent),
    ),
    (
        "request:Http:ContentType",
        ConditionKey::Text(TextKey::HttpContentType),
    ),
    (
        "response:Http:StatusCode",
        ConditionKey::Number(NumberKey::StatusCode),
    ),
    (
        "response:Http:ContentType",
        ConditionKey::Text(TextKey::ResponseContentType),
    ),
    (
        "request:SourceNamespace",
        ConditionKey::Text(TextKey::SourceNamespace),
    ),
    (
        "request:SourceServiceAccount",
        ConditionKey::Text(TextKey::SourceServiceAccount),
    ),
    ("request:SourcePod", ConditionKey::Text(TextKey::SourcePod)),
];

/// Why a key could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a key of design §3.
    #[error("unknown condition key {key:?}{}", suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    Unknown {
        /// The key as written.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
    },
    /// A header key whose name is not a valid HTTP header name.
    #[error("{name:?} in key {key:?} is not a valid HTTP header name")]
    BadHeaderName {
        /// The key as written.
        key: String,
        /// The part after `Header/`.
        name: String,
    },
    /// A pod label key that is not a valid Kubernetes label key.
    #[error("{label:?} in key {key:?} is not a valid Kubernetes label key")]
    BadLabelKey {
        /// The key as written.
        key: String,
        /// The part after `SourcePodLabel/`.
        label: String,
    },
}

impl ConditionKey {
    /// Parses a key as written in a condition. Key names are matched without
    /// regard to case, as IAM matches them (`request:destinationdomain` is
    /// `request:DestinationDomain`); so are header names after `Header/`.
    /// Pod label keys after `SourcePodLabel/` keep their case: labels are
    /// case-sensitive.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if let Some((_, fixed)) = FIXED_KEYS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
        {
            return Ok(fixed.clone());
        }
        let after = |prefix: &str| {
            key.get(..prefix.len())
                .filter(|head| head.eq_ignore_ascii_case(prefix))
                .map(|_| &key[prefix.len()..])
        };
        if let Some(name) = after(REQUEST_HEADER) {
            return header_name(key, name).map(|h| ConditionKey::Text(TextKey::RequestHeader(h)));
        }
        if let Some(name) = after(RESPONSE_HEADER) {
            return header_name(key, name).map(|h| ConditionKey::Text(TextKey::ResponseHeader(h)));
        }
        if let Some(label) = after(POD_LABEL) {
            if is_label_key(label) {
                return Ok(ConditionKey::Text(TextKey::SourcePodLabel(
                    label.to_owned(),
                )));
            }
            return Err(KeyError::BadLabelKey {
                key: key.to_owned(),
                label: label.to_owned(),
            });
        }
        Err(KeyError::Unknown {
            key: key.to_owned(),
            suggestion: suggest(key),
        })
    }

    /// The type of the key's value.
    pub fn value_type(&self) -> ValueType {
        match self {
            ConditionKey::Text(_) => ValueType::String,
            ConditionKey::DestinationDomain => ValueType::Domain,
            ConditionKey::Number(_) => ValueType::Number,
            ConditionKey::Ip(_) => ValueType::Ip,
            ConditionKey::Time => ValueType::Time,
        }
    }

    /// The first phase in which the key can have a value.
    pub fn first_phase(&self) -> Phase {
        match self {
            ConditionKey::Ip(IpKey::DestinationIp) => Phase::PreRequest,
            ConditionKey::Text(
                TextKey::HttpUri
                | TextKey::HttpMethod
                | TextKey::HttpUserAgent
                | TextKey::HttpContentType
                | TextKey::RequestHeader(_),
            ) => Phase::PreRequest,
            ConditionKey::Text(TextKey::ResponseContentType | TextKey::ResponseHeader(_))
            | ConditionKey::Number(NumberKey::StatusCode) => Phase::PostResponse,
            _ => Phase::PreDns,
        }
    }
}

impl std::fmt::Display for ConditionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConditionKey::Text(TextKey::RequestHeader(h)) => write!(f, "{REQUEST_HEADER}{h}"),
            ConditionKey::Text(TextKey::ResponseHeader(h)) => write!(f, "{RESPONSE_HEADER}{h}"),
            ConditionKey::Text(TextKey::SourcePodLabel(l)) => write!(f, "{POD_LABEL}{l}"),
            fixed => {
                let name = FIXED_KEYS
                    .iter()
                    .find(|(_, k)| k == fixed)
                    .map(|(name, _)| *name);
                f.write_str(name.unwrap_or("?"))
            }
        }
    }
}

fn header_name(key: &str, name: &str) -> Result<HeaderName, KeyError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| KeyError::BadHeaderName {
        key: key.to_owned(),
        name: name.to_owned(),
    })
}

/// `[prefix/]name` where name is at most 63 alphanumerics, `-`, `_`, `.`
/// (starting and ending alphanumeric) and the prefix a DNS subdomain.
fn is_label_key(label: &str) -> bool {
    let (prefix, name) = match label.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, label),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| crate::domain::is_dns_name(p) && p.len() <= 253);
    name_ok && prefix_ok
}

fn suggest(key: &str) -> Option<String> {
    // A misspelt prefix of a key with a name part: keep the name.
    if let Some((head, name)) = key.split_once('/') {
        let prefixes = [REQUEST_HEADER, RESPONSE_HEADER, POD_LABEL];
        let heads = prefixes.map(|p| p.trim_end_matches('/'));
        if let Some(close) = closest(head, heads) {
            return Some(format!("{close}/{name}"));
        }
    }
    closest(key, FIXED_KEYS.iter().map(|(name, _)| *name)).map(str::to_owned)
}

/// The candidate closest to `word` by edit distance, ignoring case, if it
/// is within a fifth of the word's length (at least two edits): close enough
/// to be a typo rather than another word.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 5).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_key_parses_and_prints_back() {
        for (name, _) in FIXED_KEYS {
            let key = ConditionKey::parse(name).expect("known key");
            assert_eq!(key.to_string(), *name);
        }
    }

    #[test]
    fn value_types_and_phases() {
        let cases = [
            (
                "request:DestinationDomain",
                ValueType::Domain,
                Phase::PreDns,
            ),
            ("request:DestinationPort", ValueType::Number, Phase::PreDns),
            ("request:SourceIp", ValueType::Ip, Phase::PreDns),
            ("request:DestinationIp", ValueType::Ip, Phase::PreRequest),
            ("request:Time", ValueType::Time, Phase::PreDns),
            ("request:Http:Uri", ValueType::String, Phase::PreRequest),
            (
                "request:Http:Header/X-Team",
                ValueType::String,
                Phase::PreRequest,
            ),
            (
                "response:Http:StatusCode",
                ValueType::Number,
                Phase::PostResponse,
            ),
            (
                "response:Http:Header/Server",
                ValueType::String,
                Phase::PostResponse,
            ),
            (
                "request:SourcePodLabel/app.kubernetes.io/name",
                ValueType::String,
                Phase::PreDns,
            ),
            ("request:SourceNamespace", ValueType::String, Phase::PreDns),
        ];
        for (name, value_type, phase) in cases {
            let key = ConditionKey::parse(name).expect(name);
            assert_eq!(key.value_type(), value_type, "{name}");
            assert_eq!(key.first_phase(), phase, "{name}");
        }
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let a = ConditionKey::parse("request:Http:Header/X-Team").expect("valid");
        let b = ConditionKey::parse("request:Http:Header/x-team").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "request:Http:Header/x-team");
    }

    #[test]
    fn bad_keys_say_why() {
        let cases = [
            (
                "request:DestinatonDomain",
                "did you mean \"request:DestinationDomain\"?",
            ),
            (
                "requst:Http:Method",
                "did you mean \"request:Http:Method\"?",
            ),
            ("request:Nope", "unknown condition key \"request:Nope\""),
            (
                "request:Http:Header/bad header",
                "is not a valid HTTP header name",
            ),
            ("request:Http:Header/", "is not a valid HTTP header name"),
            (
                "request:SourcePodLabel/-app",
                "is not a valid Kubernetes label key",
            ),
            (
                "request:Http:Headers/X-A",
                "did you mean \"request:Http:Header/X-A\"?",
            ),
        ];
        for (key, want) in cases {
            let err = ConditionKey::parse(key).expect_err(key).to_string();
            assert!(err.contains(want), "{key}: {err}");
        }
    }

    #[test]
    fn key_names_match_without_regard_to_case_as_iam_does() {
        for (written, canonical) in [
            ("request:destinationdomain", "request:DestinationDomain"),
            ("REQUEST:HTTP:URI", "request:Http:Uri"),
            ("Response:Http:StatusCode", "response:Http:StatusCode"),
            ("request:http:header/X-Team", "request:Http:Header/x-team"),
        ] {
            let key = ConditionKey::parse(written).expect(written);
            assert_eq!(key.to_string(), canonical, "{written}");
        }
        // Label keys keep their case: Kubernetes labels are case-sensitive.
        let label = ConditionKey::parse("request:sourcepodlabel/App").expect("label");
        assert_eq!(label.to_string(), "request:SourcePodLabel/App");
    }
}
