//! A `StringEquals` value on a domain key, canonicalised as request hosts
//! are, and how it matches a canonical name.

use crate::host::Host;

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
    /// name is canonicalised as request hosts are ([`Host`]), so
    /// `Bücher.example.` and `0x7f.1` match the spellings that reach them.
    pub fn parse(value: &str) -> Option<DomainValue> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Domain;

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
                v.matches(Domain::new(domain).as_str()),
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
