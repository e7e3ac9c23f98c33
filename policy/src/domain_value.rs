//! A `StringEquals` value on a domain key, canonicalised as request hosts
//! are, and how it matches a canonical name.

use std::collections::HashSet;

use foldhash::fast::RandomState;

use crate::domain::suffixes_of;
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

/// `StringEquals` values on a domain key as two hash sets, so a request is
/// matched with one lookup per label of its name however many values there
/// are (a list of a million domains costs what a list of ten does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainSet {
    exact: HashSet<Box<str>, RandomState>,
    apexes: HashSet<Box<str>, RandomState>,
}

impl DomainSet {
    /// Number of distinct values.
    pub fn len(&self) -> usize {
        self.exact.len() + self.apexes.len()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a normalized domain matches one of the values (as
    /// [`DomainValue::matches`] would with each).
    pub fn matches(&self, domain: &str) -> bool {
        if self.exact.contains(domain) {
            return true;
        }
        if self.apexes.is_empty() {
            return false;
        }
        suffixes_of(domain).any(|suffix| self.apexes.contains(suffix))
    }

    /// The values, each as the index of domains files it.
    pub fn values(&self) -> impl Iterator<Item = DomainValueRef<'_>> {
        self.exact.iter().map(|n| DomainValueRef::Exact(n)).chain(
            self.apexes
                .iter()
                .map(|a| DomainValueRef::ApexAndSubdomains(a)),
        )
    }
}

impl FromIterator<DomainValue> for DomainSet {
    fn from_iter<I: IntoIterator<Item = DomainValue>>(values: I) -> DomainSet {
        let mut set = DomainSet::default();
        for value in values {
            match value {
                DomainValue::Exact(name) => set.exact.insert(name),
                DomainValue::ApexAndSubdomains(apex) => set.apexes.insert(apex),
            };
        }
        set
    }
}

/// A borrowed [`DomainValue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainValueRef<'a> {
    /// Only that name.
    Exact(&'a str),
    /// The apex and every subdomain.
    ApexAndSubdomains(&'a str),
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
            let domain = Domain::new(domain);
            assert_eq!(v.matches(domain.as_str()), want, "{value} vs {domain}");
            let set: DomainSet = [v].into_iter().collect();
            assert_eq!(
                set.matches(domain.as_str()),
                want,
                "set of {value} vs {domain}"
            );
        }
        // Every value of the table in one set: a name matches when one of them does.
        let set: DomainSet = cases
            .iter()
            .filter_map(|(value, _, _)| DomainValue::parse(value))
            .collect();
        for (_, domain, _) in cases {
            let domain = Domain::new(domain);
            let any = cases
                .iter()
                .filter_map(|(value, _, _)| DomainValue::parse(value))
                .any(|v| v.matches(domain.as_str()));
            assert_eq!(set.matches(domain.as_str()), any, "{domain}");
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
