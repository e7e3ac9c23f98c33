//! The fuzz targets: every boundary where untrusted bytes come in, each with
//! the properties it must keep besides not crashing.
//!
//! Each target is a plain function of the input bytes, so the same code runs
//! under libFuzzer (`fuzz/libfuzzer`, on nightly: `fuzz/README.md`) and over
//! the checked-in corpora in `cargo test` (`tests/corpora.rs`, on stable).
//! A property that fails panics, which both report with the input.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use egress_gateway::framing::{Heads, RequestHeads};
use egress_gateway::pipeline::{Described, FixedAddress, Guard, evaluate};
use egress_gateway::request::{Client, Listener};
use egress_gateway::tls::client_hello::{self, Reading, ServerAnswer};
use egress_operator::crd::EgressProxy;
use egress_operator::inject;
use egress_policy::{CompiledPolicy, Host};
use http::{HeaderMap, HeaderName, HeaderValue};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, AdmissionReview};

/// A target: the input's bytes in, a panic when a property fails.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and libFuzzer binary have.
pub const TARGETS: &[(&str, Target)] = &[
    ("request_head", request_head),
    ("host", host),
    ("path", path),
    ("client_hello", client_hello),
    ("policy_yaml", policy_yaml),
    ("compiled_policy", compiled_policy),
    ("policy_parts", policy_parts),
    ("aws_import", aws_import),
    ("admission_review", admission_review),
    ("parent_ca", parent_ca),
];

/// The policy requests are judged by: the repository's seed example.
fn seed_policy() -> Arc<CompiledPolicy> {
    static POLICY: OnceLock<Arc<CompiledPolicy>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let yaml = include_str!("../../examples/seed-policy.yaml");
            Arc::new(egress_policy::compile_documents(yaml, None).expect("the seed compiles"))
        })
        .clone()
}

/// A request head as a client sends it to the gateway: the framing check
/// finds the same heads however the bytes are split into reads, and a head
/// httparse (hyper's parser) accepts goes through the decision sequence,
/// as the gateway and `policy eval` run it, to a decision line.
pub fn request_head(data: &[u8]) {
    framing_ignores_segmentation(data);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(data) else {
        return;
    };
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return;
    };
    let mut map = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes());
        let value = HeaderValue::from_bytes(header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    // What the handler makes of it: a CONNECT's authority is an https://
    // URL (relayed or intercepted as the policy says), anything else is
    // the absolute-form target it must be.
    let url = if method.eq_ignore_ascii_case("CONNECT") {
        format!("https://{target}")
    } else {
        target.to_owned()
    };
    let described = Described {
        client: Client {
            addr: SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 40000)),
            listener: Listener::Http,
            identity: None,
        },
        url: &url,
        method,
        headers: &map,
        response: None,
        arrived: jiff::Timestamp::UNIX_EPOCH,
    };
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
    }
    let finished = RUNTIME.with(|runtime| {
        runtime.block_on(evaluate(
            seed_policy(),
            Arc::from("fuzz"),
            &described,
            &FixedAddress(IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14))),
            &Guard::default(),
        ))
    });
    if let Ok(finished) = finished {
        let line = finished.record.to_line();
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert!(parsed.is_object(), "{line}");
        assert!(!line.contains('\n'), "one line: {line:?}");
    }
}

/// The framing check's flags for `data` read whole, and read in pieces of
/// every size a first byte picks: the same.
fn framing_ignores_segmentation(data: &[u8]) {
    let whole = framing_flags(data, data.len().max(1));
    let piece = usize::from(data.first().copied().unwrap_or(1)).max(1);
    assert_eq!(whole, framing_flags(data, piece), "in pieces of {piece}");
    assert_eq!(whole, framing_flags(data, 1), "byte by byte");
}

fn framing_flags(data: &[u8], piece: usize) -> Vec<bool> {
    let heads = Heads::default();
    let mut follower = RequestHeads::new(heads.clone());
    for chunk in data.chunks(piece) {
        follower.feed(chunk);
    }
    heads.drain()
}

/// A host as a request target, `Host` header or CONNECT authority carries
/// it: its canonical form reads back as itself, and where the WHATWG URL
/// parser (the `url` crate) also accepts it, both mean the same host.
pub fn host(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(host) = Host::parse(text) else {
        return;
    };
    let again = Host::parse(&host.to_string()).expect("the canonical form parses");
    assert_eq!(again, host, "canonical of canonical, for {text:?}");
    if let Ok(whatwg) = url::Host::parse(text) {
        let same = match (&host, &whatwg) {
            (Host::Ip(ours), url::Host::Ipv4(theirs)) => *ours == IpAddr::V4(*theirs),
            (Host::Ip(ours), url::Host::Ipv6(theirs)) => {
                *ours == IpAddr::V6(*theirs).to_canonical()
            }
            (Host::Name(ours), url::Host::Domain(theirs)) => {
                ours.as_str() == theirs.strip_suffix('.').unwrap_or(theirs)
            }
            _ => false,
        };
        assert!(same, "{text:?}: ours {host:?}, WHATWG {whatwg:?}");
    }
}

/// A request target's path and query: its normal form is a fixed point.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = egress_policy::uri::normalize(text) else {
        return;
    };
    let again = egress_policy::uri::normalize(&normal)
        .unwrap_or_else(|e| panic!("the normal form {normal:?} of {text:?} is refused: {e}"));
    assert_eq!(again, normal, "normal of normal, for {text:?}");
}

/// The first bytes of a relayed tunnel, and the destination's answer: read
/// as the relay reads them, a byte more at a time only when asked, the
/// decision is the one the whole input gives, and no more is asked than a
/// first flight may hold.
pub fn client_hello(data: &[u8]) {
    for reader in [client_hello::read, client_hello::read_second] {
        let whole = reader(data);
        let mut have = 0;
        loop {
            match reader(&data[..have]) {
                Reading::Done(decided) => {
                    assert_eq!(whole, Reading::Done(decided), "decided after {have} bytes");
                    break;
                }
                Reading::NeedAtLeast(need) => {
                    assert!(need > have, "asks for {need} with {have}");
                    assert!(
                        need <= client_hello::MAX_FIRST_FLIGHT + 1,
                        "asks for {need}"
                    );
                    if need > data.len() {
                        assert!(matches!(whole, Reading::NeedAtLeast(_)), "{whole:?}");
                        break;
                    }
                    have = need;
                }
            }
        }
    }
    let mut have = 0;
    loop {
        match client_hello::server_answer(&data[..have]) {
            ServerAnswer::NeedAtLeast(need) if need <= data.len() => {
                assert!(need > have, "asks for {need} with {have}");
                have = need;
            }
            ServerAnswer::NeedAtLeast(_) => break,
            decided => {
                assert_eq!(client_hello::server_answer(data), decided);
                break;
            }
        }
    }
}

/// Policy YAML, as `policy check` and the operator read it: a document that
/// compiles serialises to JSON that reads back as the same policy.
pub fn policy_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = egress_policy::compile_documents(text, None) {
        let json = policy.to_json();
        let back = CompiledPolicy::from_json(&json).expect("a compiled policy reads back");
        assert_eq!(back.hash(), policy.hash());
        assert_eq!(back.to_json(), json);
    }
}

/// The compiled policy the gateway reads from its ConfigMap (format version
/// and hash checked): what it accepts writes back to the same JSON.
pub fn compiled_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = CompiledPolicy::from_json(text) {
        let json = policy.to_json();
        let back = CompiledPolicy::from_json(&json).expect("its own JSON reads back");
        assert_eq!(back.hash(), policy.hash());
    }
}

/// A policy in parts as the gateway reads it through the API: the manifest
/// of the policy ConfigMap, a zero byte, then the parts' bytes (cut into as
/// many equal pieces as the manifest names; too few pieces leave the last
/// parts missing). Whatever they say, no more than the manifest's size is
/// unpacked and a policy comes only from parts whose digests all match; and
/// any text split into parts comes back whole.
pub fn policy_parts(data: &[u8]) {
    use egress_policy::parts::{self, Manifest};
    let (manifest, rest) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(manifest) = std::str::from_utf8(manifest)
        && let Ok(manifest) = Manifest::from_json(manifest)
    {
        let count = manifest.parts.len();
        let mut read: Vec<Option<Vec<u8>>> = rest
            .chunks(rest.len().div_ceil(count).max(1))
            .map(|piece| Some(piece.to_vec()))
            .collect();
        read.resize(count, None);
        if let Ok(json) = manifest.assemble(read.clone()) {
            assert_eq!(json.len(), manifest.size);
            for (part, bytes) in manifest.parts.iter().zip(&read) {
                assert_eq!(
                    bytes.as_deref().map(parts::sha256),
                    Some(part.sha256.clone())
                );
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let split = parts::split(text, |i| format!("p-{i}"), 64, 1 << 20).expect("it fits");
        let read = split.parts.into_iter().map(Some).collect();
        let manifest = Manifest::from_json(&split.manifest.to_json()).expect("its manifest reads");
        assert_eq!(manifest.assemble(read).expect("it comes back"), text);
    }
}

/// `policy import aws`, of AWS CLI JSON or the console's CSV (the first
/// byte picks the file's name): what it imports compiles, or says why.
pub fn aws_import(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let name = if first % 2 == 0 {
        "group.json"
    } else {
        "Allow-Registries.csv"
    };
    if let Ok(imported) = egress_policy::aws::import(&[(name.to_owned(), text.to_owned())]) {
        egress_policy::parse_documents(&imported.yaml).unwrap_or_else(|errors| {
            panic!(
                "the imported YAML does not read: {errors:?}\n{}",
                imported.yaml
            )
        });
    }
}

/// An AdmissionReview of a Pod through the webhook's decision and mutation:
/// the JSON patch sent back applies to the pod as the API server sent it and
/// gives the mutated pod, keeps every container's own settings, and
/// mutating again changes nothing.
pub fn admission_review(data: &[u8]) {
    let Ok(raw) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(review) = serde_json::from_value::<AdmissionReview<Pod>>(raw.clone()) else {
        return;
    };
    let request: Result<AdmissionRequest<Pod>, _> = review.try_into();
    let Ok(request) = request else {
        return;
    };
    let Some(pod) = request.object.as_ref() else {
        return;
    };
    // The API server sends a pod with its metadata; the patch is written
    // against that (found by fuzzing: one without has no /metadata to add
    // annotations to, and no API server sends it).
    if !raw["request"]["object"]["metadata"].is_object() {
        return;
    }
    // As the webhook does (operator/src/webhook.rs): the namespace asked
    // for injection, one proxy in a shared namespace serves it.
    let namespace = request.namespace.clone().unwrap_or_default();
    let labels = [("egress.dev/injection".to_owned(), "enabled".to_owned())];
    let namespace_meta = ObjectMeta {
        labels: Some(labels.into_iter().collect()),
        ..ObjectMeta::default()
    };
    let cluster = injection_cluster();
    let proxies = [injecting_proxy()];
    let Ok(choice) = inject::decide(
        &pod.metadata,
        &namespace,
        &namespace_meta,
        &proxies,
        &cluster,
    ) else {
        return;
    };
    let mutated = inject::mutate(pod, &choice, &cluster);
    let wanted = serde_json::to_value(&mutated).expect("a pod serialises");
    let patch = json_patch::diff(
        &serde_json::to_value(pod).expect("a pod serialises"),
        &wanted,
    );
    // The API server applies the patch to the object as it sent it, fields
    // this operator's Pod type does not know included.
    let mut patched = raw["request"]["object"].clone();
    json_patch::patch(&mut patched, &patch)
        .unwrap_or_else(|e| panic!("the patch does not apply to the pod it came from: {e}"));
    let read: Pod = serde_json::from_value(patched.clone()).expect("the patched pod reads");
    assert_eq!(read, mutated, "the patched pod is the mutated one");
    for (kind, index, before) in containers(&raw["request"]["object"]) {
        let after = &patched["spec"][kind][index];
        for (name, value) in before.as_object().into_iter().flatten() {
            if name != "env" && name != "volumeMounts" {
                assert_eq!(&after[name], value, "{kind}[{index}].{name} kept");
            }
        }
        let env = after["env"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for variable in before["env"].as_array().into_iter().flatten() {
            let kept = env
                .iter()
                .any(|now| now == variable || extends_java_options(variable, now));
            assert!(kept, "{kind}[{index}] keeps {variable}");
        }
    }
    let again = inject::mutate(&mutated, &choice, &cluster);
    assert_eq!(again, mutated, "mutating a mutated pod changes nothing");
}

/// Whether `now` is the container's own `JAVA_TOOL_OPTIONS` with options
/// added after them (the proxy's, and its trust store): a variable without
/// a value reads as empty (found by fuzzing), one taken from a Secret or
/// ConfigMap is never added to. Its other fields stay.
fn extends_java_options(own: &serde_json::Value, now: &serde_json::Value) -> bool {
    let java = |v: &serde_json::Value| v["name"] == "JAVA_TOOL_OPTIONS";
    if !java(own) || !java(now) || !own["valueFrom"].is_null() {
        return false;
    }
    let own_value = own["value"].as_str().unwrap_or_default();
    let others_kept = own
        .as_object()
        .into_iter()
        .flatten()
        .all(|(field, value)| field == "value" || &now[field] == value);
    others_kept
        && now["value"]
            .as_str()
            .is_some_and(|v| v.starts_with(own_value))
}

/// Every container and init container of a raw pod: kind, index, object.
fn containers(pod: &serde_json::Value) -> Vec<(&'static str, usize, &serde_json::Value)> {
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(|kind| {
            let listed = pod["spec"][kind]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            listed.iter().enumerate().map(move |(i, c)| (kind, i, c))
        })
        .collect()
}

fn injection_cluster() -> inject::Cluster {
    inject::Cluster {
        domain: "cluster.local".to_owned(),
        api_server: vec!["10.96.0.1".to_owned()],
        service_cidrs: vec!["10.96.0.0/12".to_owned()],
        pod_cidrs: vec!["10.244.0.0/16".to_owned()],
        operator_namespace: "egress-system".to_owned(),
        shared_proxy_namespaces: vec!["egress".to_owned()],
    }
}

/// A proxy in a shared namespace that intercepts (so the trust bundle is
/// mounted too) and serves every pod of the namespaces that ask.
fn injecting_proxy() -> Arc<EgressProxy> {
    static PROXY: OnceLock<Arc<EgressProxy>> = OnceLock::new();
    PROXY
        .get_or_init(|| {
            let proxy = serde_json::json!({
                "apiVersion": "egress.dev/v1alpha1",
                "kind": "EgressProxy",
                "metadata": {"name": "main", "namespace": "egress", "uid": "u"},
                "spec": {
                    "configurationRef": {"name": "c"},
                    "tlsInterception": {"enabled": true},
                    "clients": {"namespaceSelector": {}},
                }
            });
            Arc::new(serde_json::from_value(proxy).expect("a valid proxy"))
        })
        .clone()
}

/// A user's CA Secret (certificate, key, optional chain: the input split at
/// its first two NUL bytes) through the parent CA checks: refused with a
/// reason, or usable to issue a sub-CA.
pub fn parent_ca(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let cert = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let key = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let chain = parts.next().map(String::from_utf8_lossy);
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    match egress_pki::Parent::load(&cert, &key, chain.as_deref(), now) {
        Err(error) => assert!(!error.reason().is_empty()),
        Ok(parent) => {
            let day = std::time::Duration::from_secs(86_400);
            let _ = parent.issue_sub_ca("fuzz", now, day);
        }
    }
}
