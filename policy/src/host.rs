//! The canonical form of a destination host (design §9): every
//! spelling of one destination becomes one value before any rule sees it.
//!
//! The rules, in order:
//!
//! 1. `[...]` is an IPv6 literal. A zone (`%25eth0`) is refused; an
//!    IPv4-mapped address (`[::ffff:10.0.0.1]`) is the IPv4 address it carries.
//! 2. A percent sign anywhere is refused: hosts are never percent-decoded here,
//!    so `ex%61mple.com` cannot stand in for `example.com`.
//! 3. The name goes through IDNA (UTS #46, as browsers and the WHATWG URL
//!    standard do): lower case, Unicode to its ASCII (punycode) form, width and
//!    compatibility variants folded (`ＥＸＡＭＰＬＥ．com` is `example.com`),
//!    ignorable characters such as soft hyphens dropped. Invalid punycode is
//!    refused.
//! 4. One trailing dot is removed (`example.com.` is `example.com`).
//! 5. A name whose last label is a number (`127.1`, `2130706433`,
//!    `0x7f.0.0.1`, `0177.0.0.1`) is an IPv4 literal in the forms `inet_aton`
//!    and the WHATWG URL parser accept: one to four parts, each decimal, `0x`
//!    hexadecimal or `0`-led octal, the last part filling the remaining bytes.
//!    One that does not parse as such (`1.2.3.4.5`, `256.1.1.1`) is refused,
//!    since clients disagree on what it means.
//! 6. Anything else must be a DNS name: labels of 1 to 63 letters, digits, `-`
//!    or `_`, not starting or ending with `-`, 253 characters in all. Spaces,
//!    control characters, empty labels (`a..b`) and other punctuation are
//!    refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::domain::{Domain, is_dns_name};
use crate::error::Error;

/// A destination host in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lower case, ASCII, no trailing dot.
    Name(Domain),
    /// An IP literal, in whatever form it was written (IPv4-mapped IPv6
    /// addresses become IPv4).
    Ip(IpAddr),
}

impl Host {
    /// Canonicalises `host` as it appears in a request target, a `Host`
    /// header or a CONNECT authority (without the port). See the module docs
    /// for the rules.
    pub fn parse(host: &str) -> Result<Host, Error> {
        let refuse = |reason: &str| Error::InvalidHost {
            host: host.escape_debug().to_string(),
            reason: reason.to_owned(),
        };
        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| refuse("an IPv6 literal must end with ']'"))?;
            if inner.contains('%') {
                return Err(refuse("IPv6 zone identifiers are not accepted"));
            }
            let ip: Ipv6Addr = inner.parse().map_err(|_| refuse("not an IPv6 address"))?;
            return Ok(Host::Ip(IpAddr::V6(ip).to_canonical()));
        }
        if host.contains('%') {
            return Err(refuse("percent-encoding is not allowed in a host name"));
        }
        if host
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
        {
            return Err(refuse(
                "spaces, backslashes and control characters are not allowed in a host name",
            ));
        }
        if let Ok(ip) = host.parse::<Ipv6Addr>() {
            // An IPv6 address without brackets (a CONNECT target some clients send).
            return Ok(Host::Ip(IpAddr::V6(ip).to_canonical()));
        }
        let ascii = idna::domain_to_ascii_cow(host.as_bytes(), idna::AsciiDenyList::URL)
            .map_err(|_| refuse("not a valid internationalised domain name"))?;
        let name = ascii.strip_suffix('.').unwrap_or(&ascii);
        if ends_in_a_number(name) {
            return parse_ipv4(name)
                .map(|ip| Host::Ip(IpAddr::V4(ip)))
                .ok_or_else(|| refuse("ends in a number but is not an IPv4 address"));
        }
        if !is_dns_name(name) {
            return Err(refuse(
                "not a valid host name (labels of letters, digits, '-' or '_', separated by single dots)",
            ));
        }
        Ok(Host::Name(Domain::from_canonical(name)))
    }

    /// The value `request:DestinationDomain` compares: the name, or the
    /// address written canonically (`127.0.0.1`, `2001:db8::1`).
    pub fn domain(&self) -> Domain {
        match self {
            Host::Name(domain) => domain.clone(),
            Host::Ip(ip) => Domain::from_canonical(&ip.to_string()),
        }
    }

    /// The address, for an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::Ip(ip) => Some(*ip),
        }
    }
}

impl std::fmt::Display for Host {
    /// The host as it goes into an authority: IPv6 in brackets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name.as_str()),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// WHATWG's "ends in a number": the last label is all digits, or `0x`
/// followed by hex digits.
fn ends_in_a_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.is_empty() {
        return false;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// IPv4 in the forms `inet_aton` accepts (WHATWG's IPv4 parser without its
/// validation warnings).
fn parse_ipv4(name: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| parse_ipv4_number(p))
        .collect::<Option<_>>()?;
    let (last, rest) = numbers.split_last()?;
    if rest.iter().any(|n| *n > 255) {
        return None;
    }
    let room = 8 * (5 - numbers.len() as u32);
    if *last >= 1u64 << room {
        return None;
    }
    let mut value = *last;
    for (i, n) in rest.iter().enumerate() {
        value += n << (8 * (3 - i as u32));
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // `0x` alone is zero, as in WHATWG.
        return (radix == 16).then_some(0);
    }
    // Bounded so a long run of digits cannot overflow.
    if digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(host: &str) -> String {
        Host::parse(host)
            .unwrap_or_else(|e| panic!("{host:?}: {e}"))
            .to_string()
    }

    #[test]
    fn names_are_folded_to_one_spelling() {
        for (spelling, want) in [
            ("www.example.com", "www.example.com"),
            ("WWW.Example.COM", "www.example.com"),
            ("www.example.com.", "www.example.com"),
            ("ＷＷＷ．ｅｘａｍｐｌｅ．ｃｏｍ", "www.example.com"),
            ("exa\u{00AD}mple.com", "example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example.", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("_service.example.com", "_service.example.com"),
            ("1.2.3.example", "1.2.3.example"),
        ] {
            assert_eq!(canonical(spelling), want, "{spelling}");
        }
    }

    #[test]
    fn ip_literals_in_every_common_form() {
        for spelling in [
            "127.0.0.1",
            "127.0.0.1.",
            "127.1",
            "127.0.1",
            "2130706433",
            "0x7f000001",
            "0x7F.0.0.1",
            "0177.0.0.1",
            "0177.0.0.01",
            "017700000001",
            "[::ffff:127.0.0.1]",
            "[::FFFF:7f00:1]",
        ] {
            assert_eq!(canonical(spelling), "127.0.0.1", "{spelling}");
        }
        assert_eq!(canonical("[2001:DB8:0:0::1]"), "[2001:db8::1]");
        assert_eq!(canonical("2001:db8::1"), "[2001:db8::1]");
        assert_eq!(canonical("0x"), "0.0.0.0");
        assert_eq!(
            Host::parse("169.254.169.254").expect("ip").ip(),
            Some("169.254.169.254".parse().expect("ip"))
        );
    }

    #[test]
    fn unsafe_or_ambiguous_hosts_are_refused() {
        for bad in [
            "",
            ".",
            "ex%61mple.com",
            "example.com%00",
            "a..b",
            "example.com..",
            "exa mple.com",
            "exa\tmple.com",
            "exa\\mple.com",
            "-a.example",
            "a/b",
            "a@b",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.256",
            "4294967296",
            "example.123",
            "[::1",
            "[fe80::1%25eth0]",
            "[not-ip]",
            "xn--zz.example",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(
            Host::parse(&long).is_err(),
            "labels are at most 63 characters"
        );
    }

    #[test]
    fn the_domain_of_an_address_is_its_canonical_text() {
        assert_eq!(
            Host::parse("0x7f.1").expect("ip").domain().as_str(),
            "127.0.0.1"
        );
        assert_eq!(
            Host::parse("[2001:db8::0001]")
                .expect("ip")
                .domain()
                .as_str(),
            "2001:db8::1"
        );
    }
}
