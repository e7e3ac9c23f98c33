//! The normalised request target that `request:Http:Uri` rules match (design
//! §9). The request is forwarded as the client sent it; only matching
//! sees this form, so rules are written in decoded form and every spelling of
//! a path meets them.
//!
//! The rules, in order:
//!
//! 1. The target splits at the first `?` into path and query.
//! 2. Percent-encodings are decoded in both (`%66iles` is `files`, `%2F` is a
//!    slash, as many origins treat it). A `%` not followed by two hex digits,
//!    or one that decodes to NUL or another control character, is refused.
//!    Decoded bytes that are not UTF-8 stay encoded (`%FF`, upper case), and
//!    so do a percent sign (`%25`) and, in the path, `?` and `#` (`%3F`,
//!    `%23`): decoded, they would read as syntax the next time, so the
//!    normal form would not be its own normal form.
//! 3. In the path, a backslash (raw or `%5C`) counts as a slash, as IIS and
//!    WHATWG URL parsers treat it.
//! 4. In the path, repeated slashes are merged (`//a///b` is `/a/b`), then
//!    dot-segments are removed as RFC 3986 section 5.2.4 does (`/a/./b/../c` is
//!    `/a/c`; `..` never climbs above the root).
//! 5. A path with an empty segment right before `..` (`/a//../b`) is refused:
//!    servers that merge slashes first read it as `/b`, strict RFC 3986
//!    servers as `/a/b`, so no single form is safe to match.
//!
//! The query keeps its order and separators; only its percent-encodings are
//! decoded.

use std::borrow::Cow;

use crate::error::Error;

/// Normalises a request target (`/path?query`) for matching.
pub fn normalize(target: &str) -> Result<Cow<'_, str>, Error> {
    let refuse = |reason: &str| Error::InvalidTarget {
        target: target.escape_debug().to_string(),
        reason: reason.to_owned(),
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if !path.starts_with('/') {
        // Asterisk-form (`OPTIONS *`) and the like: nothing to normalise.
        return if needs_decoding(target) {
            Err(refuse(
                "a target that is not a path must not be percent-encoded",
            ))
        } else {
            Ok(Cow::Borrowed(target))
        };
    }
    if !needs_work(path) && query.is_none_or(|q| !needs_decoding(q)) {
        return Ok(Cow::Borrowed(target));
    }
    let decoded_path = decode(path, true).map_err(refuse)?;
    let mut normal = remove_dot_segments(&decoded_path).map_err(refuse)?;
    if let Some(query) = query {
        normal.push('?');
        normal.push_str(&decode(query, false).map_err(refuse)?);
    }
    Ok(Cow::Owned(normal))
}

fn needs_decoding(text: &str) -> bool {
    text.contains('%')
}

/// Whether a path could change under normalisation.
fn needs_work(path: &str) -> bool {
    path.contains(['%', '\\'])
        || path.contains("//")
        || path.contains("/./")
        || path.contains("/../")
        || path.ends_with("/.")
        || path.ends_with("/..")
}

/// Decodes `%XX`; in a path, backslashes become slashes.
fn decode(text: &str, path: bool) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit())
                .ok_or("a '%' must be followed by two hexadecimal digits")?;
            if hex.is_ascii_control() {
                return Err("an encoded NUL or control character is not allowed");
            }
            if hex == b'%' || (path && matches!(hex, b'?' | b'#')) {
                out.extend_from_slice(format!("%{hex:02X}").as_bytes());
            } else {
                out.push(hex);
            }
            i += 3;
        } else {
            if b.is_ascii_control() {
                return Err("control characters are not allowed");
            }
            out.push(b);
            i += 1;
        }
    }
    if path {
        for b in &mut out {
            if *b == b'\\' {
                *b = b'/';
            }
        }
    }
    Ok(utf8_or_encoded(&out))
}

/// The bytes as text; sequences that are not UTF-8 stay percent-encoded.
fn utf8_or_encoded(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for b in chunk.invalid() {
            text.push_str(&format!("%{b:02X}"));
        }
    }
    text
}

/// Merges repeated slashes, then removes `.` and `..` segments.
fn remove_dot_segments(path: &str) -> Result<String, &'static str> {
    let mut segments: Vec<&str> = Vec::new();
    let mut previous_was_empty = false;
    let mut trailing_slash = false;
    // The path starts with '/', so the first piece is the empty string before it.
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => {
                previous_was_empty = true;
                trailing_slash = true;
                continue;
            }
            "." => trailing_slash = true,
            ".." => {
                if previous_was_empty {
                    return Err(
                        "an empty segment before '..' ('//..') is read differently by different servers",
                    );
                }
                segments.pop();
                trailing_slash = true;
            }
            name => segments.push(name),
        }
        previous_was_empty = false;
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(target: &str) -> String {
        normalize(target)
            .unwrap_or_else(|e| panic!("{target:?}: {e}"))
            .into_owned()
    }

    #[test]
    fn equivalent_spellings_meet_one_form() {
        for (spelling, want) in [
            ("/files/report.pdf", "/files/report.pdf"),
            ("/%66iles/report.pdf", "/files/report.pdf"),
            ("/%66%69%6C%65%73/report.pdf", "/files/report.pdf"),
            ("/a/../files/report.pdf", "/files/report.pdf"),
            ("/a/%2e%2e/files/report.pdf", "/files/report.pdf"),
            ("/./files/./report.pdf", "/files/report.pdf"),
            ("//files///report.pdf", "/files/report.pdf"),
            ("/files%2Freport.pdf", "/files/report.pdf"),
            ("/files%2freport.pdf", "/files/report.pdf"),
            ("/files\\report.pdf", "/files/report.pdf"),
            ("/files%5Creport.pdf", "/files/report.pdf"),
            ("/../../files/report.pdf", "/files/report.pdf"),
            (
                "/api/v4/projects/group%2Fproject",
                "/api/v4/projects/group/project",
            ),
        ] {
            assert_eq!(normal(spelling), want, "{spelling}");
        }
    }

    /// Found by fuzzing (`fuzz/corpus/path/`): decoded, `%25` became a `%`
    /// that the next normalisation refused, and `%3F` a `?` that split the
    /// path anew.
    #[test]
    fn the_normal_form_is_its_own_normal_form() {
        for (spelling, want) in [
            ("/a%25b", "/a%25b"),
            ("/a%2541", "/a%2541"),
            ("/a%3fb?c", "/a%3Fb?c"),
            ("/a%23b", "/a%23b"),
            ("/s?q=%25%3F%23", "/s?q=%25?#"),
        ] {
            assert_eq!(normal(spelling), want, "{spelling}");
            assert_eq!(normal(want), normal(&normal(want)), "{want}");
        }
    }

    #[test]
    fn trailing_segments_and_the_root() {
        for (spelling, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/", "/a/b/"),
            ("/..", "/"),
            ("*", "*"),
        ] {
            assert_eq!(normal(spelling), want, "{spelling}");
        }
    }

    #[test]
    fn queries_are_decoded_but_keep_their_shape() {
        assert_eq!(normal("/s?q=%2Ffiles%2F&x=1"), "/s?q=/files/&x=1");
        assert_eq!(normal("/s?a=1//2&b=../c"), "/s?a=1//2&b=../c");
        assert_eq!(normal("/a/../s?q"), "/s?q");
        assert_eq!(normal("/caf%C3%A9"), "/café");
        assert_eq!(normal("/bad%FFbyte"), "/bad%FFbyte");
    }

    #[test]
    fn unsafe_targets_are_refused() {
        for bad in [
            "/files/%zz",
            "/files/%4",
            "/files/%",
            "/files/%00",
            "/files/%0a",
            "/files/%7F",
            "/s?q=%00",
            "/a//../b",
            "/a/%2F../b",
            "*%2F",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn plain_targets_are_borrowed() {
        assert!(matches!(normalize("/a/b?c=d"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/./b"), Ok(Cow::Owned(_))));
    }
}
