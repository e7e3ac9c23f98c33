//! Canonical forms (design §9), as properties: for generated names, addresses and
//! paths, every equivalent spelling gets the same decision as the canonical
//! one.

mod common;

use common::*;
use egress_policy::uri::normalize;
use egress_policy::{Action, CompiledPolicy, Host, HttpRequest, RequestContext};
use http::HeaderMap;
use proptest::prelude::*;

fn decide(policy: &CompiledPolicy, host: &str, target: &str) -> Option<(Action, String)> {
    let host = Host::parse(host).ok()?;
    let target = normalize(target).ok()?;
    let headers = HeaderMap::new();
    let ctx = RequestContext {
        destination_domain: Some(host.domain()),
        destination_ip: host.ip(),
        destination_port: Some(443),
        request: Some(HttpRequest {
            method: "GET",
            uri: &target,
            headers: &headers,
        }),
        ..Default::default()
    };
    let decision = policy.evaluate(&ctx);
    Some((decision.final_action, decision.final_rule_name.to_string()))
}

fn policy_for(apex: &str, address: &str, segment: &str) -> CompiledPolicy {
    let pattern = format!("*/{segment}/*");
    policy(
        vec![group(
            "g",
            vec![
                rule(
                    "deny-apex",
                    Action::Deny,
                    &[(
                        "request:DestinationDomain",
                        "StringEquals",
                        &[&format!(".{apex}")],
                    )],
                ),
                rule(
                    "deny-address",
                    Action::Deny,
                    &[("request:DestinationDomain", "StringEquals", &[address])],
                ),
            ],
            vec![rule(
                "deny-segment",
                Action::Deny,
                &[("request:Http:Uri", "StringLike", &[&pattern])],
            )],
            vec![],
        )],
        [Action::Allow; 3],
    )
}

/// A label of letters and digits, some of them accented.
fn label() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::char::range('a', 'z'),
            2 => proptest::char::range('0', '9'),
            1 => proptest::sample::select(vec!['ü', 'é', 'ñ', 'ø', 'ж']),
        ],
        1..8,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// A name whose last label is not a number (that would be an address).
fn name() -> impl Strategy<Value = Vec<String>> {
    (proptest::collection::vec(label(), 1..3), "[a-z]{2,6}").prop_map(|(mut labels, tld)| {
        labels.push(tld);
        labels
    })
}

/// Another spelling of the same name: case, full-width forms, ideographic
/// dots, ignorable soft hyphens, a trailing dot, or the punycode form.
fn respell(labels: &[String], choices: &[u8]) -> String {
    let mut out = String::new();
    let mut choice = choices.iter().copied().cycle();
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(match choice.next().unwrap_or(0) % 4 {
                0 => '\u{3002}',
                1 => '\u{FF0E}',
                _ => '.',
            });
        }
        for c in label.chars() {
            match choice.next().unwrap_or(0) % 6 {
                0 => out.extend(c.to_uppercase()),
                1 if c.is_ascii_alphanumeric() => {
                    // Full-width forms fold to ASCII.
                    let wide = char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c);
                    out.push(wide);
                }
                2 => {
                    out.push('\u{00AD}');
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
    if choice.next().unwrap_or(0) % 2 == 0 {
        out.push('.');
    }
    out
}

/// Spellings of an IPv4 address that `inet_aton` and WHATWG accept.
fn ipv4_spellings(ip: [u8; 4]) -> Vec<String> {
    let n = u32::from_be_bytes(ip);
    let [a, b, c, d] = ip;
    vec![
        format!("{a}.{b}.{c}.{d}"),
        format!("{a}.{b}.{c}.{d}."),
        format!("{n}"),
        format!("0x{n:x}"),
        format!("0X{n:08X}"),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
        format!("{a}.{b}.{}", u32::from(c) << 8 | u32::from(d)),
        format!("{a}.{}", n & 0x00ff_ffff),
        format!("[::ffff:{a}.{b}.{c}.{d}]"),
        format!("[::FFFF:{:x}:{:x}]", n >> 16, n & 0xffff),
    ]
}

/// Another spelling of `segments` as a path: percent-encoded characters,
/// encoded or doubled slashes, backslashes, `.` and `x/..` detours.
fn respell_path(segments: &[String], choices: &[u8]) -> String {
    let mut out = String::new();
    let mut choice = choices.iter().copied().cycle();
    for segment in segments {
        match choice.next().unwrap_or(0) % 5 {
            0 => out.push_str("/."),
            1 => out.push_str("/zz/.."),
            2 => out.push_str("/%2e/zz/%2E%2E"),
            _ => {}
        }
        // A target starts with a literal slash; later ones may be spelled otherwise.
        let separator = match choice.next().unwrap_or(0) % 6 {
            0 => "//",
            1 => "%2F",
            2 => "%2f",
            3 => "\\",
            _ => "/",
        };
        out.push_str(if out.is_empty() && !separator.starts_with('/') {
            "/"
        } else {
            separator
        });
        for b in segment.bytes() {
            if choice.next().unwrap_or(0) % 3 == 0 {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push(char::from(b));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_spelling_of_a_name_meets_the_same_rules(
        labels in name(),
        choices in proptest::collection::vec(any::<u8>(), 1..32),
        deny_apex in any::<bool>(),
    ) {
        let canonical = labels.join(".");
        let apex = if deny_apex { labels[labels.len() - 1].clone() } else { "other-tld".to_owned() };
        let policy = policy_for(&apex, "192.0.2.1", "files");
        let expected = decide(&policy, &canonical, "/").expect("a valid name");
        let spelled = respell(&labels, &choices);
        prop_assert_eq!(decide(&policy, &spelled, "/"), Some(expected.clone()), "{}", spelled);
        // The ASCII (punycode) form is the same name too.
        let ascii = Host::parse(&canonical).expect("valid").to_string();
        prop_assert_eq!(decide(&policy, &ascii, "/"), Some(expected), "{}", ascii);
    }

    #[test]
    fn every_spelling_of_an_address_meets_the_same_rules(ip in any::<[u8; 4]>(), deny in any::<bool>()) {
        let [a, b, c, d] = ip;
        let address = if deny { format!("{a}.{b}.{c}.{d}") } else { "192.0.2.1".to_owned() };
        let policy = policy_for("other-tld", &address, "files");
        let expected = decide(&policy, &format!("{a}.{b}.{c}.{d}"), "/").expect("valid");
        for spelled in ipv4_spellings(ip) {
            prop_assert_eq!(decide(&policy, &spelled, "/"), Some(expected.clone()), "{}", spelled);
        }
    }

    #[test]
    fn every_spelling_of_a_path_meets_the_same_rules(
        segments in proptest::collection::vec("[a-z0-9._~-]{1,6}", 1..5)
            .prop_filter("no dot segments in the canonical path", |s| s.iter().all(|x| x != "." && x != "..")),
        choices in proptest::collection::vec(any::<u8>(), 1..64),
        pick in any::<prop::sample::Index>(),
        query in "(\\?[a-z=&%2F]{0,8})?",
    ) {
        let segment = pick.get(&segments).clone();
        let policy = policy_for("other-tld", "192.0.2.1", &segment);
        let canonical = format!("/{}/x{query}", segments.join("/"));
        let expected = decide(&policy, "a.example", &canonical);
        prop_assume!(expected.is_some());
        let spelled = format!("{}/x{query}", respell_path(&segments, &choices));
        prop_assert_eq!(decide(&policy, "a.example", &spelled), expected, "{} vs {}", spelled, canonical);
    }
}

#[test]
fn hosts_and_paths_with_no_safe_form_are_refused() {
    for host in [
        "ex%61mple.com",
        "a..b",
        "1.2.3.4.5",
        "exa mple.com",
        "[fe80::1%25eth0]",
    ] {
        assert!(Host::parse(host).is_err(), "{host}");
    }
    for target in ["/a//../b", "/%zz", "/a%00b", "/a%0D%0Ab"] {
        assert!(normalize(target).is_err(), "{target}");
    }
}
