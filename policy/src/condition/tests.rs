//! Every operator on every value type it fits, including missing values and
//! negated operators with several values.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::*;
use crate::context::{HttpRequest, HttpResponse, SourceIdentity};
use crate::domain::Domain;

fn condition(key: &str, operator: &str, values: &[&str]) -> Condition {
    let key = ConditionKey::parse(key).expect("valid key");
    let operator = Operator::parse(operator).expect("valid operator");
    assert!(
        operator.fits(key.value_type()),
        "test pairs {operator} with {key}"
    );
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    Condition::build(key, operator, &values).expect("valid values")
}

struct Fixture {
    request_headers: HeaderMap,
    response_headers: HeaderMap,
    identity: SourceIdentity,
}

impl Fixture {
    fn new() -> Fixture {
        let mut request_headers = HeaderMap::new();
        request_headers.insert("user-agent", "curl/8.5.0".parse().expect("valid"));
        request_headers.insert("content-type", "application/json".parse().expect("valid"));
        request_headers.append("x-team", "payments".parse().expect("valid"));
        request_headers.append("x-team", "Platform".parse().expect("valid"));
        let mut response_headers = HeaderMap::new();
        response_headers.insert(
            "content-type",
            "text/html; charset=utf-8".parse().expect("valid"),
        );
        response_headers.insert("server", "nginx".parse().expect("valid"));
        Fixture {
            request_headers,
            response_headers,
            identity: SourceIdentity {
                namespace: "shop".into(),
                service_account: "checkout".into(),
                pod: "checkout-7d9f".into(),
                labels: BTreeMap::from([("app.kubernetes.io/name".into(), "checkout".into())]),
            },
        }
    }

    /// A fully known request: every key has a value.
    fn full(&self) -> RequestContext<'_> {
        RequestContext {
            time: Some("2026-03-02T10:30:00Z".parse().expect("valid")),
            source_ip: Some("10.244.1.7".parse().expect("valid")),
            source_port: Some(40_000),
            source_vpc: Some("prod-eu"),
            source_vpce: Some("egress-https"),
            source: Some(&self.identity),
            protocol: Some("https"),
            destination_domain: Some(Domain::new("api.Example.com.")),
            destination_port: Some(443),
            destination_ip: Some("93.184.215.14".parse().expect("valid")),
            request: Some(HttpRequest {
                method: "GET",
                uri: "/v1/files/report.pdf?x=1",
                headers: &self.request_headers,
            }),
            response: Some(HttpResponse {
                status: 404,
                headers: &self.response_headers,
            }),
        }
    }
}

/// (key, operator, values, expected on the full request)
type Case = (&'static str, &'static str, &'static [&'static str], bool);

const CASES: &[Case] = &[
    // Strings
    (
        "request:Http:Method",
        "StringEquals",
        &["POST", "GET"],
        true,
    ),
    ("request:Http:Method", "StringEquals", &["get"], false),
    (
        "request:Http:Method",
        "StringNotEquals",
        &["POST", "PUT"],
        true,
    ),
    (
        "request:Http:Method",
        "StringNotEquals",
        &["POST", "GET"],
        false,
    ),
    (
        "request:Http:Method",
        "StringEqualsIgnoreCase",
        &["get"],
        true,
    ),
    (
        "request:Http:Method",
        "StringNotEqualsIgnoreCase",
        &["get"],
        false,
    ),
    (
        "request:Http:Method",
        "StringNotEqualsIgnoreCase",
        &["post", "put"],
        true,
    ),
    ("request:Http:Uri", "StringLike", &["*/files/*"], true),
    (
        "request:Http:Uri",
        "StringLike",
        &["/v?/files/*.pdf?x=?"],
        true,
    ),
    ("request:Http:Uri", "StringLike", &["/v1/FILES/*"], false),
    (
        "request:Http:Uri",
        "StringNotLike",
        &["/admin/*", "*.exe"],
        true,
    ),
    (
        "request:Http:Uri",
        "StringNotLike",
        &["/admin/*", "*/files/*"],
        false,
    ),
    ("request:Http:UserAgent", "StringLike", &["curl/*"], true),
    (
        "request:Http:ContentType",
        "StringEquals",
        &["application/json"],
        true,
    ),
    (
        "request:Http:Header/X-TEAM",
        "StringEquals",
        &["Platform"],
        true,
    ),
    (
        "request:Http:Header/x-team",
        "StringEqualsIgnoreCase",
        &["PAYMENTS"],
        true,
    ),
    (
        "request:Http:Header/x-team",
        "StringNotEquals",
        &["payments"],
        false,
    ),
    (
        "request:Http:Header/x-team",
        "StringNotEquals",
        &["ops"],
        true,
    ),
    (
        "response:Http:ContentType",
        "StringLike",
        &["text/html*"],
        true,
    ),
    (
        "response:Http:Header/Server",
        "StringEquals",
        &["nginx"],
        true,
    ),
    ("request:Protocol", "StringEquals", &["https"], true),
    ("request:SourceVpc", "StringEquals", &["prod-eu"], true),
    ("request:SourceVpce", "StringLike", &["*-https"], true),
    ("request:SourceAccount", "StringEquals", &["shop"], true),
    ("request:SourceNamespace", "StringEquals", &["shop"], true),
    (
        "request:SourceServiceAccount",
        "StringEquals",
        &["checkout"],
        true,
    ),
    ("request:SourcePod", "StringLike", &["checkout-*"], true),
    (
        "request:SourcePodLabel/app.kubernetes.io/name",
        "StringEquals",
        &["checkout"],
        true,
    ),
    (
        "request:SourcePodLabel/team",
        "StringNotEquals",
        &["x"],
        false,
    ),
    // Domains
    (
        "request:DestinationDomain",
        "StringEquals",
        &["api.example.com"],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringEquals",
        &["API.EXAMPLE.COM."],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringEquals",
        &["example.com"],
        false,
    ),
    (
        "request:DestinationDomain",
        "StringEquals",
        &[".example.com"],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringEquals",
        &[".api.example.com"],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringEqualsIgnoreCase",
        &["Api.Example.Com"],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringNotEquals",
        &["other.com", ".example.org"],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringNotEquals",
        &["other.com", ".example.com"],
        false,
    ),
    (
        "request:DestinationDomain",
        "StringNotEqualsIgnoreCase",
        &["API.example.com"],
        false,
    ),
    (
        "request:DestinationDomain",
        "StringLike",
        &["*.EXAMPLE.com"],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringLike",
        &["ap?.example.com"],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringLike",
        &["*.example.org"],
        false,
    ),
    (
        "request:DestinationDomain",
        "StringNotLike",
        &["*.example.org", "*.test"],
        true,
    ),
    (
        "request:DestinationDomain",
        "StringNotLike",
        &["*.example.org", "api.*"],
        false,
    ),
    // Numbers
    (
        "request:DestinationPort",
        "NumericEquals",
        &["80", "443"],
        true,
    ),
    (
        "request:DestinationPort",
        "NumericNotEquals",
        &["80", "8080"],
        true,
    ),
    (
        "request:DestinationPort",
        "NumericNotEquals",
        &["80", "443"],
        false,
    ),
    (
        "request:DestinationPort",
        "NumericLessThan",
        &["443"],
        false,
    ),
    (
        "request:DestinationPort",
        "NumericLessThanEquals",
        &["443"],
        true,
    ),
    (
        "request:DestinationPort",
        "NumericGreaterThan",
        &["1024", "100"],
        true,
    ),
    (
        "request:DestinationPort",
        "NumericGreaterThanEquals",
        &["444"],
        false,
    ),
    ("request:SourcePort", "NumericGreaterThan", &["32767"], true),
    ("response:Http:StatusCode", "NumericEquals", &["404"], true),
    (
        "response:Http:StatusCode",
        "NumericGreaterThanEquals",
        &["400"],
        true,
    ),
    (
        "response:Http:StatusCode",
        "NumericLessThan",
        &["400"],
        false,
    ),
    // IP addresses
    ("request:SourceIp", "IpAddress", &["10.244.0.0/16"], true),
    ("request:SourceIp", "IpAddress", &["10.244.1.7"], true),
    (
        "request:SourceIp",
        "IpAddress",
        &["10.0.0.0/16", "192.168.0.0/16"],
        false,
    ),
    (
        "request:SourceIp",
        "NotIpAddress",
        &["10.0.0.0/16", "192.168.0.0/16"],
        true,
    ),
    (
        "request:SourceIp",
        "NotIpAddress",
        &["10.0.0.0/8", "192.168.0.0/16"],
        false,
    ),
    (
        "request:SourceIp",
        "IpAddress",
        &["::ffff:10.244.0.0/112"],
        true,
    ),
    (
        "request:DestinationIp",
        "IpAddress",
        &["93.184.215.0/24"],
        true,
    ),
    (
        "request:DestinationIp",
        "IpAddress",
        &["2001:db8::/32"],
        false,
    ),
    (
        "request:DestinationIp",
        "NotIpAddress",
        &["2001:db8::/32"],
        true,
    ),
    // Time
    (
        "request:Time",
        "DateGreaterThan",
        &["2026-03-01T00:00:00Z"],
        true,
    ),
    (
        "request:Time",
        "DateLessThan",
        &["2026-03-01T00:00:00Z"],
        false,
    ),
    (
        "request:Time",
        "DateLessThan",
        &["2026-03-02T10:30:01Z"],
        true,
    ),
    ("request:Time", "DateGreaterThan", &["09:00"], true),
    ("request:Time", "DateLessThan", &["17:00"], true),
    ("request:Time", "DateGreaterThan", &["11:00"], false),
    ("request:Time", "DateGreaterThan", &["11:00+01:00"], true),
    // The IAM date family, and the forms IAM writes instants in.
    (
        "request:Time",
        "DateEquals",
        &["2026-03-02T10:30:00Z"],
        true,
    ),
    (
        "request:Time",
        "DateEquals",
        &["2026-03-02T11:30:00+01:00"],
        true,
    ),
    ("request:Time", "DateEquals", &["1772447400"], true),
    ("request:Time", "DateEquals", &["10:30"], true),
    ("request:Time", "DateEquals", &["2026-03-02"], false),
    ("request:Time", "DateNotEquals", &["09:00", "10:30"], false),
    ("request:Time", "DateNotEquals", &["09:00", "12:00"], true),
    (
        "request:Time",
        "DateLessThanEquals",
        &["2026-03-02T10:30:00Z"],
        true,
    ),
    ("request:Time", "DateLessThanEquals", &["10:29"], false),
    ("request:Time", "DateGreaterThanEquals", &["10:30"], true),
    ("request:Time", "DateGreaterThanEquals", &["10:31"], false),
    ("request:Time", "DateGreaterThan", &["1772447399"], true),
    ("request:Time", "DateLessThan", &["2026-03-03"], true),
    // Decimal numbers, as IAM's numeric operators take them.
    ("request:DestinationPort", "NumericEquals", &["443.0"], true),
    (
        "request:DestinationPort",
        "NumericEquals",
        &["443.5"],
        false,
    ),
    (
        "request:DestinationPort",
        "NumericLessThan",
        &["443.5"],
        true,
    ),
    (
        "request:DestinationPort",
        "NumericGreaterThan",
        &["442.9"],
        true,
    ),
    (
        "request:DestinationPort",
        "NumericNotEquals",
        &["443.5"],
        true,
    ),
];

#[test]
fn every_operator_on_a_full_request() {
    let fixture = Fixture::new();
    let ctx = fixture.full();
    for (key, operator, values, want) in CASES {
        assert_eq!(
            condition(key, operator, values).holds(&ctx),
            *want,
            "{key} {operator} {values:?}"
        );
    }
}

#[test]
fn missing_values_never_match_even_when_negated() {
    // Nothing is known: every condition, positive or negated, fails.
    let empty = RequestContext::default();
    for (key, operator, values, _) in CASES {
        assert!(
            !condition(key, operator, values).holds(&empty),
            "{key} {operator} {values:?}"
        );
    }
    // A tunnel that is not intercepted: HTTP keys are missing.
    let fixture = Fixture::new();
    let tunnel = RequestContext {
        request: None,
        response: None,
        ..fixture.full()
    };
    assert!(!condition("request:Http:Uri", "StringNotLike", &["/admin/*"]).holds(&tunnel));
    assert!(!condition("response:Http:StatusCode", "NumericNotEquals", &["200"]).holds(&tunnel));
    assert!(condition("request:DestinationPort", "NumericEquals", &["443"]).holds(&tunnel));
    // A header the request does not carry is missing too.
    assert!(
        !condition("request:Http:Header/x-absent", "StringNotEquals", &["a"])
            .holds(&fixture.full())
    );
}

#[test]
fn mapped_ipv6_addresses_compare_as_ipv4() {
    let ctx = RequestContext {
        source_ip: Some("::ffff:10.1.2.3".parse().expect("valid")),
        ..Default::default()
    };
    assert!(condition("request:SourceIp", "IpAddress", &["10.0.0.0/8"]).holds(&ctx));
    assert!(condition("request:SourceIp", "NotIpAddress", &["192.168.0.0/16"]).holds(&ctx));
}

#[test]
fn header_values_that_are_not_text_are_skipped() {
    let mut headers = HeaderMap::new();
    headers.append(
        "x-bin",
        http::HeaderValue::from_bytes(b"\xff\xfe").expect("opaque value"),
    );
    let ctx = RequestContext {
        request: Some(HttpRequest {
            method: "GET",
            uri: "/",
            headers: &headers,
        }),
        ..Default::default()
    };
    assert!(!condition("request:Http:Header/x-bin", "StringLike", &["*"]).holds(&ctx));
    assert!(!condition("request:Http:Header/x-bin", "StringNotEquals", &["a"]).holds(&ctx));
}

#[test]
fn value_errors_name_each_bad_value() {
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], &'a [(usize, &'a str)]);
    let cases: &[Case] = &[
        (
            "request:SourceIp",
            "IpAddress",
            &["10.0.0.0/8", "10.0.0.0/33", "10.0.0.256"],
            &[
                (1, "\"10.0.0.0/33\" is not a CIDR"),
                (2, "\"10.0.0.256\" is not an IP address or CIDR"),
            ],
        ),
        (
            "request:DestinationPort",
            "NumericEquals",
            &["4o4", "80"],
            &[(0, "\"4o4\" is not a number")],
        ),
        (
            "request:DestinationDomain",
            "StringEquals",
            &["ok.com", "bad domain"],
            &[(1, "\"bad domain\" is not a domain name")],
        ),
        (
            "request:DestinationDomain",
            "StringLike",
            &["*.ok.com", "bad/*"],
            &[(1, "\"bad/*\" is not a domain pattern")],
        ),
        (
            "request:Http:Uri",
            "StringLike",
            &[""],
            &[(0, "an empty pattern only matches the empty string")],
        ),
        (
            "request:Time",
            "DateLessThan",
            &["soon"],
            &[(0, "\"soon\" is not a time")],
        ),
    ];
    for (key, operator, values, want) in cases {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let errors = Condition::build(
            ConditionKey::parse(key).expect("valid"),
            Operator::parse(operator).expect("valid"),
            &values,
        )
        .expect_err("invalid values");
        assert_eq!(errors.len(), want.len(), "{key} {operator}: {errors:?}");
        for ((index, message), (want_index, want_message)) in errors.iter().zip(want.iter()) {
            assert_eq!(index, want_index, "{key}");
            assert!(message.contains(want_message), "{key}: {message}");
        }
    }
}

#[test]
fn index_entries_only_for_positive_conditions_whose_values_all_have_one() {
    let entries = |k, o, v: &[&str]| {
        condition(k, o, v).index_entries().map(|(rank, entries)| {
            (
                rank,
                entries.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>(),
            )
        })
    };
    let some = |rank: u8, list: &[&str]| {
        Some((rank, list.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
    };
    assert_eq!(
        entries(
            "request:DestinationDomain",
            "StringEquals",
            &["A.com", ".b.com"]
        ),
        some(0, &["DomainExact(\"a.com\")", "DomainSuffix(\"b.com\")"])
    );
    assert_eq!(
        entries(
            "request:DestinationDomain",
            "StringLike",
            &["*.c.com", "x.com"]
        ),
        some(0, &["DomainSuffix(\"c.com\")", "DomainExact(\"x.com\")"])
    );
    assert_eq!(
        entries("request:DestinationDomain", "StringLike", &["api-*.c.com"]),
        some(3, &["Literal { key: None, literal: \".c.com\" }"])
    );
    assert_eq!(
        entries("request:DestinationDomain", "StringLike", &["*.c.com", "*"]),
        None
    );
    assert_eq!(
        entries("request:DestinationDomain", "StringNotEquals", &["a.com"]),
        None
    );
    assert_eq!(
        entries("request:Http:Method", "StringEqualsIgnoreCase", &["Get"]),
        some(
            1,
            &["Text { key: HttpMethod, lowercase: true, value: \"get\" }"]
        )
    );
    assert_eq!(
        entries("request:Http:Uri", "StringLike", &["*/files/*"]),
        some(3, &["Literal { key: Some(HttpUri), literal: \"/files/\" }"])
    );
    assert_eq!(
        entries("request:DestinationPort", "NumericEquals", &["443"]),
        some(1, &["Number { key: DestinationPort, value: 443 }"])
    );
    assert_eq!(
        entries("request:DestinationPort", "NumericLessThan", &["443"]),
        None
    );
    assert_eq!(
        entries("request:SourceIp", "IpAddress", &["10.1.0.0/16"]),
        some(2, &["Ip { key: SourceIp, bucket: V4(10) }"])
    );
    assert_eq!(
        entries(
            "request:SourceIp",
            "IpAddress",
            &["10.1.0.0/16", "0.0.0.0/0"]
        ),
        None
    );
    assert_eq!(
        entries("request:SourceIp", "NotIpAddress", &["10.1.0.0/16"]),
        None
    );
}
