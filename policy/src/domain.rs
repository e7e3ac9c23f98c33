//! Domain names as SPEC.md section 4 compares them: case-insensitive, without
//! a trailing dot; a `StringEquals` value with a leading dot matches the apex
//! and every subdomain.

use std::borrow::Cow;

/// Lower-cases a name and drops one trailing dot (`WWW.Example.COM.` ->
/// `www.example.com`). Borrows when the name is already normal.
pub fn normalize(name: &str) -> Cow<'_, str> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.chars().any(char::is_uppercase) {
        Cow::Owned(trimmed.to_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// A normalized destination domain, as evaluation expects it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Domain(Box<str>);

impl Domain {
    /// Normalizes `name` (see [`normalize`]).
    pub fn new(name: &str) -> Domain {
        Domain(normalize(name).into())
    }

    /// A name already in canonical form (see [`crate::host::Host::parse`]).
    pub(crate) fn from_canonical(name: &str) -> Domain {
        Domain(name.into())
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name itself, then each parent (`a.b.c`, `b.c`, `c`): the keys
    /// under which leading-dot values are indexed.
    pub fn suffixes(&self) -> impl Iterator<Item = &str> {
        let name = self.as_str();
        std::iter::once(name).chain(name.match_indices('.').map(move |(i, _)| &name[i + 1..]))
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `StringEquals` value on a domain key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainValue {
    /// `example.com`: only that name.
    Exact(Box<str>),
    /// `.example.com`: the apex and every subdomain (stored without the dot).
    ApexAndSubdomains(Box<str>),
}

impl DomainValue {
    /// Parses a value; `None` when it is not a DNS name or IP address. The
    /// name is canonicalised as request hosts are ([`crate::host::Host`]), so
    /// `Bücher.example.` and `0x7f.1` match the spellings that reach them.
    pub fn parse(value: &str) -> Option<DomainValue> {
        use crate::host::Host;
        match value.strip_prefix('.') {
            Some(apex) => match Host::parse(apex).ok()? {
                Host::Name(name) => Some(DomainValue::ApexAndSubdomains(name.as_str().into())),
                Host::Ip(_) => None,
            },
            None => Some(DomainValue::Exact(
                Host::parse(value).ok()?.domain().as_str().into(),
            )),
        }
    }

    /// Whether a normalized domain matches this value.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainValue::Exact(name) => domain == &**name,
            DomainValue::ApexAndSubdomains(apex) => {
                domain == &**apex
                    || (domain.len() > apex.len()
                        && domain.ends_with(&**apex)
                        && domain.as_bytes()[domain.len() - apex.len() - 1] == b'.')
            }
        }
    }
}

/// A syntactically valid DNS name: dot-separated labels of 1 to 63 letters,
/// digits, `-` or `_` (service names use `_`), at most 253 characters in all.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize("WWW.Example.COM."), "www.example.com");
        assert_eq!(normalize("example.com"), "example.com");
        assert!(matches!(normalize("example.com"), Cow::Borrowed(_)));
        assert_eq!(Domain::new("Example.com.").as_str(), "example.com");
    }

    #[test]
    fn suffixes_walk_up_to_the_tld() {
        let d = Domain::new("a.b.example.com");
        let all: Vec<&str> = d.suffixes().collect();
        assert_eq!(
            all,
            ["a.b.example.com", "b.example.com", "example.com", "com"]
        );
    }

    #[test]
    fn value_matching() {
        let cases = [
            ("example.com", "example.com", true),
            ("example.com", "www.example.com", false),
            ("Example.COM.", "example.com", true),
            (".example.com", "example.com", true),
            (".example.com", "www.example.com", true),
            (".example.com", "a.b.example.com", true),
            (".example.com", "badexample.com", false),
            (".example.com", "example.com.evil.net", false),
            ("10.0.0.1", "10.0.0.1", true),
            ("0x0a.1", "10.0.0.1", true),
            ("Bücher.example", "xn--bcher-kva.example", true),
            (".bücher.example", "www.xn--bcher-kva.example", true),
        ];
        for (value, domain, want) in cases {
            let v = DomainValue::parse(value).expect(value);
            assert_eq!(
                v.matches(&Domain::new(domain).0),
                want,
                "{value} vs {domain}"
            );
        }
    }

    #[test]
    fn invalid_values() {
        for bad in [
            "",
            ".",
            "..example.com",
            "exa mple.com",
            "a..b",
            "-a.com",
            "a/b",
            "*.example.com",
        ] {
            assert_eq!(DomainValue::parse(bad), None, "{bad:?}");
        }
    }
}
