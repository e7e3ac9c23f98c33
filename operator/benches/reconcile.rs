//! How fast the operator follows a change, and what reconciling costs at
//! scale, on the real control plane:
//!
//!     cargo bench -p egress-operator --bench reconcile
//!
//! 1. A rule changed with `kubectl apply`: the time until the new policy is in
//!    the proxy's ConfigMap, seen through a watch (ten changes).
//! 2. 1,000 rule groups, 100 configurations of ten groups each, 100 proxies:
//!    the time until every proxy has compiled its policy, the operator's CPU
//!    time and memory, reconciles and their mean duration; then one shared
//!    group changed, and the time until every proxy using it has the new
//!    ConfigMap; then a cluster baseline (ClusterProxyRuleGroup) created,
//!    and the time until every proxy's ConfigMap carries it.
//! 3. A million domains in twenty ProxyLists of 50,000, named by one rule:
//!    the time from the rule applied to the policy written in parts, and the
//!    gateway (as its pod runs it) reading them: time to ready, resident
//!    memory, and the operator's.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{
    Operator, apply_domain_lists, client, install_crds, kubectl_apply, namespace, rendered_gateway,
};
use egress_e2e::ControlPlane;
use egress_operator::crd::{
    ClusterProxyRuleGroup, EgressProxy, ProxyConfiguration, ProxyRuleGroup,
};
use egress_policy::parts::{MANIFEST_KEY, Manifest};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

const SEED: &str = include_str!("../../examples/seed-policy.yaml");

fn seed(namespace: &str, deny: &str) -> String {
    SEED.replace(
        "metadata:\n",
        &format!("metadata:\n  namespace: {namespace}\n"),
    )
    .replace("\"*/files/*\"", &format!("\"*/{deny}/*\""))
    .replace(
        "tlsInterception:\n    enabled: true",
        "tlsInterception:\n    enabled: false",
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn metric(operator: &Operator, name: &str) -> f64 {
    operator.metric(name)
}

#[tokio::main]
async fn main() {
    let plane = ControlPlane::start().expect("control plane");
    install_crds(&plane);
    let client = client(&plane).await;
    let operator = Operator::start(&plane, &["--leader-election", "false"]);

    // 1. Latency of a rule change.
    namespace(&client, "bench-latency").await;
    let (ok, output) = kubectl_apply(&plane, &seed("bench-latency", "files"));
    assert!(ok, "{output}");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-latency");
    let mut watch = watcher(
        config_maps.clone(),
        watcher::Config::default().fields("metadata.name=egress-policy"),
    )
    .applied_objects()
    .boxed();
    let mut hash = loop {
        if let Some(Ok(cm)) = watch.next().await
            && let Some(hash) = hash_of(&cm)
        {
            break hash;
        }
    };
    let (mut to_configmap, mut after_kubectl) = (Vec::new(), Vec::new());
    for round in 0..10 {
        let started = Instant::now();
        let (ok, output) = kubectl_apply(&plane, &seed("bench-latency", &format!("round{round}")));
        assert!(ok, "{output}");
        let applied = started.elapsed();
        loop {
            let cm = watch.next().await.expect("watch").expect("event");
            if let Some(new) = hash_of(&cm)
                && new != hash
            {
                hash = new;
                break;
            }
        }
        to_configmap.push(started.elapsed());
        after_kubectl.push(started.elapsed().saturating_sub(applied));
    }
    to_configmap.sort();
    after_kubectl.sort();
    println!("rule change applied with kubectl -> new policy in the ConfigMap (10 changes):");
    println!(
        "  from the start of `kubectl apply`: median {:?}, max {:?}",
        percentile(&to_configmap, 0.5),
        percentile(&to_configmap, 1.0)
    );
    println!(
        "  after kubectl returned:            median {:?}, max {:?}",
        percentile(&after_kubectl, 0.5),
        percentile(&after_kubectl, 1.0)
    );

    // 2. Scale: 1,000 groups, 100 configurations, 100 proxies.
    let ns = "bench-scale";
    namespace(&client, ns).await;
    let apply = PatchParams::apply("bench").force();
    let groups: Api<ProxyRuleGroup> = Api::namespaced(client.clone(), ns);
    let configurations: Api<ProxyConfiguration> = Api::namespaced(client.clone(), ns);
    let proxies: Api<EgressProxy> = Api::namespaced(client.clone(), ns);
    let (cpu_before, _) = operator.usage();
    let reconciles_before = metric(&operator, "egress_operator_reconciles_total");
    let started = Instant::now();
    for g in 0..1000 {
        let group = serde_json::json!({
            "apiVersion": "egress.dev/v1alpha1", "kind": "ProxyRuleGroup",
            "metadata": {"name": format!("group-{g}")},
            "spec": {"rules": {
                "preDNS": [{"name": "deny-domain", "action": "Deny", "conditions": [
                    {"key": "request:DestinationDomain", "operator": "StringEquals", "values": [format!(".blocked-{g}.example")]}]}],
                "preRequest": [{"name": "deny-path", "action": "Deny", "conditions": [
                    {"key": "request:Http:Uri", "operator": "StringLike", "values": [format!("*/private-{g}/*")]}]}],
                "postResponse": [{"name": "alert-5xx", "action": "Alert", "conditions": [
                    {"key": "response:Http:StatusCode", "operator": "NumericGreaterThanEquals", "values": [500]}]}]
            }}
        });
        groups
            .patch(&format!("group-{g}"), &apply, &Patch::Apply(group))
            .await
            .expect("group");
    }
    for c in 0..100 {
        // Ten groups each; group-0 is in every configuration.
        let mut listed: Vec<serde_json::Value> = vec![serde_json::json!({"name": "group-0"})];
        listed.extend(
            (1..10).map(|i| serde_json::json!({"name": format!("group-{}", (c * 9 + i) % 1000)})),
        );
        listed.dedup();
        let configuration = serde_json::json!({
            "apiVersion": "egress.dev/v1alpha1", "kind": "ProxyConfiguration",
            "metadata": {"name": format!("config-{c}")},
            "spec": {"ruleGroups": listed, "defaultActions": {"preDNS": "Allow", "preRequest": "Allow", "postResponse": "Allow"}}
        });
        configurations
            .patch(&format!("config-{c}"), &apply, &Patch::Apply(configuration))
            .await
            .expect("configuration");
        let proxy = serde_json::json!({
            "apiVersion": "egress.dev/v1alpha1", "kind": "EgressProxy",
            "metadata": {"name": format!("proxy-{c}")},
            "spec": {"configurationRef": {"name": format!("config-{c}")}}
        });
        proxies
            .patch(&format!("proxy-{c}"), &apply, &Patch::Apply(proxy))
            .await
            .expect("proxy");
    }
    let created = started.elapsed();
    let compiled = |p: &EgressProxy| {
        p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "PolicyCompiled" && c.status == "True")
        })
    };
    loop {
        let list = proxies.list(&Default::default()).await.expect("list");
        if list.items.iter().filter(|p| compiled(p)).count() == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_compiled = started.elapsed();
    let (cpu_after, rss) = operator.usage();
    let reconciles = metric(&operator, "egress_operator_reconciles_total") - reconciles_before;
    println!("\n1,000 rule groups (3 rules each), 100 configurations of 10 groups, 100 proxies:");
    println!("  objects created through the API in {created:?}");
    println!("  every proxy compiled and rendered after {all_compiled:?}");
    println!(
        "  operator: {:.1} s CPU for {reconciles:.0} reconciles ({:.1} ms CPU each), {rss:.0} MiB resident",
        cpu_after - cpu_before,
        1000.0 * (cpu_after - cpu_before) / reconciles.max(1.0)
    );
    for controller in ["egressproxy", "proxyconfiguration", "proxyrulegroup"] {
        let sum = metric(
            &operator,
            &format!(
                "egress_operator_reconcile_duration_seconds_sum{{controller=\"{controller}\"}}"
            ),
        );
        let count = metric(
            &operator,
            &format!(
                "egress_operator_reconcile_duration_seconds_count{{controller=\"{controller}\"}}"
            ),
        );
        println!(
            "  {controller}: {count:.0} reconciles, mean {:.1} ms wall",
            1000.0 * sum / count.max(1.0)
        );
    }

    // One group every proxy uses changes, then a cluster baseline is
    // created: every ConfigMap follows each.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let changed = denying_group("ProxyRuleGroup", "group-0", ".changed.example");
    let took =
        until_every_policy_changes(&config_maps, apply_group(&groups, &apply, changed)).await;
    println!("  a group all 100 proxies use changed -> all 100 ConfigMaps updated after {took:?}");
    let baselines: Api<ClusterProxyRuleGroup> = Api::all(client.clone());
    let baseline = denying_group("ClusterProxyRuleGroup", "baseline", ".paste.example");
    let took =
        until_every_policy_changes(&config_maps, apply_group(&baselines, &apply, baseline)).await;
    println!(
        "  a baseline (ClusterProxyRuleGroup) created -> all 100 ConfigMaps updated after {took:?}"
    );

    // 3. A million domains.
    let ns = "bench-million";
    namespace(&client, ns).await;
    let started = Instant::now();
    let named = apply_domain_lists(&plane, ns, 20, 50_000);
    println!("\n1,000,000 domains in 20 ProxyLists of 50,000:");
    println!("  lists applied (server-side) in {:?}", started.elapsed());
    let yaml = format!(
        "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: blocklist, namespace: {ns}}}\nspec:\n  rules:\n    preDNS:\n      - name: listed\n        action: Deny\n        conditions: [{{key: \"request:DestinationDomain\", operator: StringEquals, {named}}}]\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {{name: c, namespace: {ns}}}\nspec:\n  ruleGroups: [{{name: blocklist}}]\n  defaultActions: {{preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n---\napiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata: {{name: egress, namespace: {ns}}}\nspec:\n  configurationRef: {{name: c}}\n  replicas: 1\n"
    );
    let started = Instant::now();
    let (ok, output) = kubectl_apply(&plane, &yaml);
    assert!(ok, "{output}");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let (hash, parts) = loop {
        if let Ok(Some(cm)) = config_maps.get_opt("egress-policy").await
            && let Some(hash) = hash_of(&cm)
            && let Some(manifest) = cm.data.as_ref().and_then(|d| d.get(MANIFEST_KEY))
        {
            let manifest = Manifest::from_json(manifest).expect("manifest");
            break (hash, manifest);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let written = started.elapsed();
    let mut gzipped = 0;
    for part in &parts.parts {
        let part = config_maps.get(&part.name).await.expect("part");
        gzipped += part
            .binary_data
            .map_or(0, |d| d.values().map(|b| b.0.len()).sum());
    }
    println!(
        "  rule applied -> policy written in {} parts ({:.1} MB gzipped, {:.1} MB of JSON) after {written:?}",
        parts.parts.len(),
        gzipped as f64 / 1e6,
        parts.size as f64 / 1e6,
    );
    let dir = common::TempDir::new(ns);
    let started = Instant::now();
    let gateway = rendered_gateway(&plane, ns, &dir.0, &[]);
    loop {
        let (status, body) = gateway.admin_get("/readyz");
        if status == 200 && body.contains(&hash) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (gateway_cpu, gateway_rss) = gateway.usage();
    println!(
        "  gateway started -> parts read and ready after {:?} ({gateway_cpu:.1} s CPU), {gateway_rss:.0} MiB resident",
        started.elapsed()
    );
    let (_, operator_rss) = operator.usage();
    println!("  operator: {operator_rss:.0} MiB resident");
    drop(gateway);
    drop(operator);
    drop(plane);
}

/// The policy hash of each of the 100 proxies' ConfigMaps.
async fn policy_hashes(config_maps: &Api<ConfigMap>) -> Vec<Option<String>> {
    futures_util::future::join_all((0..100).map(|c| async move {
        let config_map = config_maps.get(&format!("proxy-{c}-policy")).await;
        config_map.ok().and_then(|cm| hash_of(&cm))
    }))
    .await
}

/// How long after `change` starts every proxy's policy has changed.
async fn until_every_policy_changes(
    config_maps: &Api<ConfigMap>,
    change: impl std::future::Future<Output = ()>,
) -> Duration {
    let before = policy_hashes(config_maps).await;
    let started = Instant::now();
    change.await;
    loop {
        let now = policy_hashes(config_maps).await;
        if now.iter().zip(&before).all(|(a, b)| a != b) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A rule group of `kind` named `name` whose one rule denies `domain`
/// before DNS.
fn denying_group(kind: &str, name: &str, domain: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "egress.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name},
        "spec": {"rules": {"preDNS": [{"name": "deny-domain", "action": "Deny", "conditions": [
            {"key": "request:DestinationDomain", "operator": "StringEquals", "values": [domain]}]}]}}
    })
}

/// Applies `group` (server-side) through `api`.
async fn apply_group<K>(api: &Api<K>, apply: &PatchParams, group: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = group["metadata"]["name"].as_str().expect("name").to_owned();
    api.patch(&name, apply, &Patch::Apply(group))
        .await
        .expect(&name);
}

/// The policy hash a ConfigMap's annotation records.
fn hash_of(config_map: &ConfigMap) -> Option<String> {
    config_map
        .annotations()
        .get("egress.dev/policy-hash")
        .cloned()
}
