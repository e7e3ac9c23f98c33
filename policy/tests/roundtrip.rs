//! The serialized compiled policy: compile, serialize, load gives the same
//! policy (same bytes, same hash, same decisions); tampering is detected.

mod common;

use common::*;
use egress_policy::{
    Action, CompiledPolicy, Domain, Error, HttpRequest, HttpResponse, RequestContext,
    compile_documents,
};
use http::HeaderMap;
use proptest::prelude::*;
use sha2::Digest;

/// Valid conditions, by the earliest phase they fit.
const PRE_DNS_CONDITIONS: &[Cond] = &[
    (
        "request:DestinationDomain",
        "StringEquals",
        &[".example.com", "api.test"],
    ),
    (
        "request:DestinationDomain",
        "StringLike",
        &["*.example.org"],
    ),
    (
        "request:DestinationDomain",
        "StringNotEquals",
        &["safe.example.com"],
    ),
    (
        "request:DestinationPort",
        "NumericNotEquals",
        &["443", "80"],
    ),
    ("request:DestinationPort", "NumericLessThan", &["1024"]),
    ("request:SourceIp", "IpAddress", &["10.0.0.0/8", "fd00::/8"]),
    (
        "request:SourceNamespace",
        "StringEqualsIgnoreCase",
        &["Shop"],
    ),
    ("request:Time", "DateGreaterThan", &["09:00"]),
    ("request:Protocol", "StringEquals", &["https"]),
];
const PRE_REQUEST_CONDITIONS: &[Cond] = &[
    ("request:Http:Uri", "StringLike", &["*/files/*"]),
    ("request:Http:Method", "StringNotEquals", &["GET", "HEAD"]),
    ("request:Http:Header/X-Team", "StringEquals", &["payments"]),
    ("request:DestinationIp", "NotIpAddress", &["93.184.0.0/16"]),
];
const POST_RESPONSE_CONDITIONS: &[Cond] = &[
    (
        "response:Http:StatusCode",
        "NumericGreaterThanEquals",
        &["400"],
    ),
    ("response:Http:ContentType", "StringLike", &["text/*"]),
];

fn conditions_for(phase: usize) -> Vec<Cond<'static>> {
    let mut all = PRE_DNS_CONDITIONS.to_vec();
    if phase >= 1 {
        all.extend_from_slice(PRE_REQUEST_CONDITIONS);
    }
    if phase >= 2 {
        all.extend_from_slice(POST_RESPONSE_CONDITIONS);
    }
    all
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![Action::Allow, Action::Deny, Action::Alert])
}

/// (phase, action, indexes into the phase's condition pool) per rule, per group.
type GroupShape = Vec<(usize, Action, Vec<prop::sample::Index>)>;

fn policy_shape() -> impl Strategy<Value = (Vec<GroupShape>, [Action; 3])> {
    let rule = (
        0usize..3,
        action(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    );
    let group = prop::collection::vec(rule, 0..6);
    (
        prop::collection::vec(group, 1..4),
        [action(), action(), action()],
    )
}

fn build(shape: &(Vec<GroupShape>, [Action; 3])) -> CompiledPolicy {
    let (groups, defaults) = shape;
    let groups = groups
        .iter()
        .enumerate()
        .map(|(g, rules)| {
            let mut phases = [Vec::new(), Vec::new(), Vec::new()];
            for (r, (phase, action, picks)) in rules.iter().enumerate() {
                let pool = conditions_for(*phase);
                let conditions: Vec<Cond> = picks.iter().map(|i| *i.get(&pool)).collect();
                phases[*phase].push(rule(&format!("rule-{r}"), *action, &conditions));
            }
            let [pre_dns, pre_request, post_response] = phases;
            group(&format!("group-{g}"), pre_dns, pre_request, post_response)
        })
        .collect();
    policy(groups, *defaults)
}

fn sample_requests(headers: &HeaderMap) -> Vec<RequestContext<'_>> {
    let domains = [
        "www.example.com",
        "api.test",
        "x.example.org",
        "safe.example.com",
        "other.net",
    ];
    let mut out = Vec::new();
    for (i, domain) in domains.iter().enumerate() {
        out.push(RequestContext {
            time: Some("2026-03-02T10:30:00Z".parse().expect("valid")),
            source_ip: Some(
                if i % 2 == 0 { "10.1.2.3" } else { "192.0.2.1" }
                    .parse()
                    .expect("valid"),
            ),
            protocol: Some("https"),
            destination_domain: Some(Domain::new(domain)),
            destination_port: Some(if i % 2 == 0 { 443 } else { 8080 }),
            destination_ip: Some("93.184.215.14".parse().expect("valid")),
            request: Some(HttpRequest {
                method: if i % 3 == 0 { "GET" } else { "POST" },
                uri: if i % 2 == 0 { "/a/files/b" } else { "/" },
                headers,
            }),
            response: Some(HttpResponse {
                status: if i % 2 == 0 { 404 } else { 200 },
                headers,
            }),
            ..Default::default()
        });
    }
    out
}

proptest! {
    #[test]
    fn compile_serialize_load_round_trips(shape in policy_shape()) {
        let compiled = build(&shape);
        let json = compiled.to_json();
        let loaded = CompiledPolicy::from_json(&json).expect("a serialized policy loads");
        prop_assert_eq!(loaded.hash(), compiled.hash());
        prop_assert_eq!(loaded.to_json(), json);
        let mut headers = HeaderMap::new();
        headers.insert("x-team", "payments".parse().expect("valid"));
        headers.insert("content-type", "text/html".parse().expect("valid"));
        for ctx in sample_requests(&headers) {
            prop_assert_eq!(loaded.evaluate(&ctx), compiled.evaluate(&ctx));
        }
    }
}

const SEED: &str = include_str!("../../examples/seed-policy.yaml");

#[test]
fn the_hash_is_stable_and_content_addressed() {
    let a = compile_documents(SEED, None).expect("seed compiles");
    let b = compile_documents(SEED, None).expect("seed compiles");
    assert_eq!(a.hash(), b.hash());
    assert!(
        a.hash().starts_with("sha256:") && a.hash().len() == 7 + 64,
        "{}",
        a.hash()
    );
    // Any change of content changes the hash.
    let edited = SEED.replace("Deny", "Alert");
    assert_ne!(
        compile_documents(&edited, None)
            .expect("still valid")
            .hash(),
        a.hash()
    );
    // The pretty form is the same document.
    assert_eq!(
        CompiledPolicy::from_json(&a.to_json_pretty())
            .expect("loads")
            .hash(),
        a.hash()
    );
}

#[test]
fn tampered_or_foreign_documents_are_refused() {
    let policy = compile_documents(SEED, None).expect("seed compiles");
    let json = policy.to_json();

    let tampered = json.replacen("\"Deny\"", "\"Allow\"", 1);
    assert!(matches!(
        CompiledPolicy::from_json(&tampered),
        Err(Error::HashMismatch { .. })
    ));

    let newer = json.replace("\"formatVersion\":1", "\"formatVersion\":2");
    let err = CompiledPolicy::from_json(&newer).expect_err("newer format");
    assert_eq!(
        err.to_string(),
        "compiled policy format version 2 is not supported (this build reads version 1)"
    );

    assert!(matches!(
        CompiledPolicy::from_json("{\"formatVersion\":1}"),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(
        CompiledPolicy::from_json("not json"),
        Err(Error::Malformed(_))
    ));

    // Content that was never validated, with a correct hash (the documented
    // `sha256:<hex>` of the document with `hash` empty), is compiled on load and
    // refused with paths.
    let mut document = policy.document().clone();
    document.rule_groups[0].spec.rules.pre_dns[0].conditions[0].values = vec!["bad domain".into()];
    document.hash = String::new();
    let digest = sha2::Sha256::digest(serde_json::to_vec(&document).expect("serializes"));
    document.hash = format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let err = CompiledPolicy::from_json(&serde_json::to_string(&document).expect("serializes"))
        .expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "compiled policy is invalid: ruleGroups[0].rules.preDNS[0].conditions[0].values[0]: \"bad domain\" is not a domain name (expected a name like example.com, or .example.com for the apex and all its subdomains)"
    );
}

#[test]
fn yaml_scalars_keep_their_text() {
    let yaml = r#"
apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata: {name: g, namespace: y}
spec:
  rules:
    preRequest:
      - name: r
        action: Deny
        conditions:
          - {key: "request:Http:Header/X-Flag", operator: StringEquals, values: [on, 0755, 1_000, 404]}
---
apiVersion: egress.dev/v1alpha1
kind: ProxyConfiguration
metadata: {name: c, namespace: y}
spec: {ruleGroups: [{name: g}], defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}}
"#;
    let policy = compile_documents(yaml, None).expect("valid");
    let values = &policy.document().rule_groups[0].spec.rules.pre_request[0].conditions[0].values;
    assert_eq!(values, &["on", "0755", "1_000", "404"]);
}
