//! `StringLike` patterns: `*` matches any run of characters (also none), `?`
//! exactly one character; everything else is literal. There is no escape, as
//! in IAM.

/// A compiled glob pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    shape: Shape,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    /// No wildcard at all.
    Exact(Box<str>),
    /// `lit*`.
    Prefix(Box<str>),
    /// `*lit`.
    Suffix(Box<str>),
    /// `*lit*`.
    Contains(Box<str>),
    /// Anything else: matched token by token with star backtracking.
    General(Box<[Token]>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Star,
    AnyChar,
    Literal(Box<str>),
}

impl Glob {
    /// Compiles a pattern. Runs of `*` are collapsed (they mean the same), and
    /// the common shapes get a direct string test.
    pub fn new(pattern: &str) -> Glob {
        let tokens = tokenize(pattern);
        let shape = match tokens.as_slice() {
            [] => Shape::Exact("".into()),
            [Token::Literal(l)] => Shape::Exact(l.clone()),
            [Token::Literal(l), Token::Star] => Shape::Prefix(l.clone()),
            [Token::Star, Token::Literal(l)] => Shape::Suffix(l.clone()),
            [Token::Star, Token::Literal(l), Token::Star] => Shape::Contains(l.clone()),
            [Token::Star] => Shape::Prefix("".into()),
            _ => Shape::General(tokens.into_boxed_slice()),
        };
        Glob { shape }
    }

    /// The literal text after a leading `*` when that is the only wildcard
    /// (`*.example.com` gives `.example.com`): such patterns can be indexed.
    pub fn literal_suffix(&self) -> Option<&str> {
        match &self.shape {
            Shape::Suffix(l) => Some(l),
            _ => None,
        }
    }

    /// The text of a pattern without wildcards.
    pub fn exact(&self) -> Option<&str> {
        match &self.shape {
            Shape::Exact(l) => Some(l),
            _ => None,
        }
    }

    /// A literal that every matching text contains (the longest one of the
    /// pattern), or `None` when the pattern has no literal at all (`*`, `?*`).
    /// Indexes use it to skip rules whose literal is not in the request.
    pub fn required_literal(&self) -> Option<&str> {
        let literal: &str = match &self.shape {
            Shape::Exact(l) | Shape::Prefix(l) | Shape::Suffix(l) | Shape::Contains(l) => l,
            Shape::General(tokens) => tokens
                .iter()
                .filter_map(|t| match t {
                    Token::Literal(l) => Some(&**l),
                    _ => None,
                })
                .max_by_key(|l| l.len())
                .unwrap_or(""),
        };
        (!literal.is_empty()).then_some(literal)
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        match &self.shape {
            Shape::Exact(l) => text == &**l,
            Shape::Prefix(l) => text.starts_with(&**l),
            Shape::Suffix(l) => text.ends_with(&**l),
            Shape::Contains(l) => text.contains(&**l),
            Shape::General(tokens) => matches_tokens(tokens, text),
        }
    }
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    for c in pattern.chars() {
        match c {
            '*' | '?' => {
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal).into()));
                }
                if c == '?' {
                    tokens.push(Token::AnyChar);
                } else if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            _ => literal.push(c),
        }
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal.into()));
    }
    tokens
}

/// Linear matching with backtracking to the last star only: with `*` and `?` as
/// the only wildcards, retrying from the most recent star is enough, so the cost
/// is O(pattern × text) at worst and usually linear.
fn matches_tokens(tokens: &[Token], text: &str) -> bool {
    let (mut ti, mut si) = (0usize, 0usize);
    // (token index after the star, text position the star currently ends at)
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        if ti < tokens.len() {
            match &tokens[ti] {
                Token::Star => {
                    backtrack = Some((ti + 1, si));
                    ti += 1;
                    continue;
                }
                Token::AnyChar => {
                    if let Some(c) = text[si..].chars().next() {
                        si += c.len_utf8();
                        ti += 1;
                        continue;
                    }
                }
                Token::Literal(l) => {
                    if text[si..].starts_with(&**l) {
                        si += l.len();
                        ti += 1;
                        continue;
                    }
                }
            }
        } else if si == text.len() {
            return true;
        }
        // Mismatch: let the last star swallow one more character.
        match backtrack {
            Some((after_star, star_end)) => match text[star_end..].chars().next() {
                Some(c) => {
                    let next = star_end + c.len_utf8();
                    backtrack = Some((after_star, next));
                    ti = after_star;
                    si = next;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Obviously correct, exponential reference: recursion over characters.
    fn reference(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Some(('?', rest)) => !text.is_empty() && reference(rest, &text[1..]),
            Some((c, rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
        }
    }

    #[test]
    fn table() {
        let cases = [
            ("*/files/*", "/a/files/b", true),
            ("*/files/*", "/files/", true),
            ("*/files/*", "/file/b", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*.example.com", "www.example.com", true),
            ("*.example.com", "example.com", false),
            ("GET", "get", false),
            ("a**b", "ab", true),
            ("?*", "", false),
            ("*?", "x", true),
            ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                want,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn literal_suffix_only_for_leading_star() {
        assert_eq!(
            Glob::new("*.example.com").literal_suffix(),
            Some(".example.com")
        );
        assert_eq!(Glob::new("*.ex?mple.com").literal_suffix(), None);
        assert_eq!(Glob::new("www.*").literal_suffix(), None);
    }

    #[test]
    fn required_literals() {
        assert_eq!(Glob::new("*/files/*").required_literal(), Some("/files/"));
        assert_eq!(Glob::new("a?bcd*e").required_literal(), Some("bcd"));
        assert_eq!(Glob::new("exact").required_literal(), Some("exact"));
        assert_eq!(Glob::new("*").required_literal(), None);
        assert_eq!(Glob::new("?*?").required_literal(), None);
    }

    proptest! {
        #[test]
        fn required_literal_is_in_every_match(pattern in "[ab*?]{0,8}", text in "[ab]{0,12}") {
            let glob = Glob::new(&pattern);
            if glob.matches(&text) && let Some(literal) = glob.required_literal() {
                prop_assert!(text.contains(literal));
            }
        }

        #[test]
        fn agrees_with_reference(pattern in "[ab*?é]{0,8}", text in "[abé]{0,12}") {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            prop_assert_eq!(Glob::new(&pattern).matches(&text), reference(&p, &t));
        }
    }
}
