//! Domain names as design §4 compares them: case-insensitive, without
//! a trailing dot; a `StringEquals` value with a leading dot matches the apex
//! and every subdomain.

use std::borrow::Cow;
use std::sync::Arc;

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

/// A normalized destination domain, as evaluation expects it. Shared, not
/// copied: a request's name is handed to every phase and its log line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Domain(Arc<str>);

impl Domain {
    /// Normalizes `name` (see [`normalize`]).
    pub fn new(name: &str) -> Domain {
        Domain(normalize(name).into())
    }

    /// A name already in canonical form (as `Host::parse` makes it).
    pub(crate) fn from_canonical(name: &str) -> Domain {
        Domain(name.into())
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalized name, shared.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// The name itself, then each parent (`a.b.c`, `b.c`, `c`): the keys
    /// under which leading-dot values are indexed.
    pub fn suffixes(&self) -> impl Iterator<Item = &str> {
        suffixes_of(self.as_str())
    }
}

/// A name and what follows each of its dots: `a.b.c`, `b.c`, `c`.
pub(crate) fn suffixes_of(name: &str) -> impl Iterator<Item = &str> {
    std::iter::once(name).chain(name.match_indices('.').map(move |(i, _)| &name[i + 1..]))
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
}
