//! Reading policies from the CRD YAML documents users `kubectl apply`, for the
//! standalone gateway and the `policy` CLI. Documents of other API groups
//! (Namespaces, Secrets, ...) in the same file are skipped.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::compile::{Available, CompiledPolicy, compile, compile_for_proxy, select_baseline};
use crate::error::CompileError;
use crate::list::validate_list;
use crate::named::Named;
use crate::spec::{
    API_VERSION, ClusterProxyRuleGroupSpec, EgressProxySpec, ProxyConfigurationSpec, ProxyListSpec,
    ProxyRuleGroupSpec,
};

const GROUP: &str = "egress.dev/";

/// Most YAML nodes (every entry and field counts one) a file may hold.
pub const MAX_YAML_NODES: usize = 2_500_000;

/// The egress.dev resources of a file, by namespace.
#[derive(Clone, Debug, Default)]
pub struct Documents {
    /// `ProxyRuleGroup`s with their namespace.
    pub rule_groups: Vec<(String, Named<ProxyRuleGroupSpec>)>,
    /// `ProxyConfiguration`s with their namespace.
    pub configurations: Vec<(String, Named<ProxyConfigurationSpec>)>,
    /// `EgressProxy`s with their namespace.
    pub proxies: Vec<(String, Named<EgressProxySpec>)>,
    /// `ProxyList`s with their namespace.
    pub lists: Vec<(String, Named<ProxyListSpec>)>,
    /// `ClusterProxyRuleGroup`s.
    pub cluster_groups: Vec<Named<ClusterProxyRuleGroupSpec>>,
    /// `ClusterProxyList`s.
    pub cluster_lists: Vec<Named<ProxyListSpec>>,
    /// The labels of the `Namespace` documents, by name (what a
    /// `ClusterProxyRuleGroup`'s `namespaceSelector` selects by).
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: serde_json::Value,
}

#[derive(Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses a multi-document YAML file; every malformed document is reported.
pub fn parse_documents(yaml: &str) -> Result<Documents, Vec<CompileError>> {
    // Documents are read untyped first (their kind decides the type), so scalar
    // inference must not mangle text: YAML 1.2 booleans only (`namespace: y` stays
    // a string) and numbers with leading zeros or underscores kept as written.
    // The parser's budget is raised from its defaults (250,000 nodes) so a
    // file can hold lists of a million entries or two; it still bounds
    // what a file can make the parser do.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        budget: serde_saphyr::budget! {
            max_nodes: MAX_YAML_NODES,
            max_events: 2 * MAX_YAML_NODES,
        },
    };
    let values: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(yaml, options)
        .map_err(|e| {
            vec![CompileError::new(
                "documents",
                format!("not valid YAML: {e}"),
            )]
        })?;
    let mut docs = Documents::default();
    let mut errors = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let header: Header = match serde_json::from_value(value) {
            Ok(h) => h,
            Err(e) => {
                errors.push(CompileError::new(
                    format!("documents[{i}]"),
                    format!("not a Kubernetes object: {e}"),
                ));
                continue;
            }
        };
        if header.api_version == "v1" && header.kind == "Namespace" {
            docs.namespace_labels
                .insert(header.metadata.name, header.metadata.labels);
            continue;
        }
        if !header.api_version.starts_with(GROUP) {
            continue;
        }
        let what = format!(
            "documents[{i}] ({} {:?})",
            header.kind, header.metadata.name
        );
        if header.api_version != API_VERSION {
            errors.push(CompileError::new(
                format!("{what}.apiVersion"),
                format!("{:?} is not served; use {API_VERSION}", header.api_version),
            ));
            continue;
        }
        if header.metadata.name.is_empty() {
            errors.push(CompileError::new(
                format!("{what}.metadata.name"),
                "name is required",
            ));
            continue;
        }
        let namespace = header
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = header.metadata.name.clone();
        let log_name = header
            .metadata
            .annotations
            .get(crate::objects::AWS_NAME_ANNOTATION)
            .cloned();
        let spec_path = format!("{what}.spec");
        match header.kind.as_str() {
            "ProxyRuleGroup" => match spec_of(&spec_path, header.spec) {
                Ok(spec) => docs
                    .rule_groups
                    .push((namespace, Named::new(name, spec).with_log_name(log_name))),
                Err(e) => errors.push(e),
            },
            "ProxyConfiguration" => match spec_of(&spec_path, header.spec) {
                Ok(spec) => docs.configurations.push((namespace, Named::new(name, spec))),
                Err(e) => errors.push(e),
            },
            "EgressProxy" => match spec_of(&spec_path, header.spec) {
                Ok(spec) => docs.proxies.push((namespace, Named::new(name, spec))),
                Err(e) => errors.push(e),
            },
            "ProxyList" | "ClusterProxyList" => {
                match spec_of::<ProxyListSpec>(&spec_path, header.spec) {
                    Ok(spec) => {
                        let bad = validate_list(&spec);
                        if !bad.is_empty() {
                            errors.extend(bad.into_iter().map(|e| {
                                CompileError::new(format!("{spec_path}.{}", e.path), e.message)
                            }));
                        } else if header.kind == "ProxyList" {
                            docs.lists.push((namespace, Named::new(name, spec)));
                        } else {
                            docs.cluster_lists.push(Named::new(name, spec));
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            "ClusterProxyRuleGroup" => match spec_of(&spec_path, header.spec) {
                Ok(spec) => docs
                    .cluster_groups
                    .push(Named::new(name, spec).with_log_name(log_name)),
                Err(e) => errors.push(e),
            },
            other => errors.push(CompileError::new(
                format!("{what}.kind"),
                format!("unknown kind {other:?}; expected ProxyRuleGroup, ProxyConfiguration, EgressProxy, ProxyList, ClusterProxyRuleGroup or ClusterProxyList"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

impl Documents {
    /// Calls `compile` with what a configuration in `namespace` may refer to.
    fn with_available<R>(&self, namespace: &str, compile: impl FnOnce(Available<'_>) -> R) -> R {
        let groups = in_namespace(&self.rule_groups, namespace);
        let lists = in_namespace(&self.lists, namespace);
        let baseline = self.baseline_for(namespace);
        compile(Available {
            groups: &groups,
            lists: &lists,
            baseline: &baseline,
            cluster_lists: &self.cluster_lists,
        })
    }

    /// The `ClusterProxyRuleGroup`s that select `namespace` (by the labels
    /// of its `Namespace` document; none: no labels), as rule groups in
    /// name order.
    pub fn baseline_for(&self, namespace: &str) -> Vec<Named<ProxyRuleGroupSpec>> {
        let none = BTreeMap::new();
        let labels = self.namespace_labels.get(namespace).unwrap_or(&none);
        let groups = self
            .cluster_groups
            .iter()
            .map(|g| (g.name.as_str(), &g.spec, g.log_name.as_deref()));
        select_baseline(groups, labels)
    }
}

/// The objects of `namespace`.
fn in_namespace<T: Clone>(all: &[(String, Named<T>)], namespace: &str) -> Vec<Named<T>> {
    all.iter()
        .filter(|(ns, _)| ns == namespace)
        .map(|(_, x)| x.clone())
        .collect()
}

fn spec_of<T: DeserializeOwned>(path: &str, spec: serde_json::Value) -> Result<T, CompileError> {
    // A document without `spec` is one whose fields all take their defaults.
    let spec = if spec.is_null() {
        serde_json::json!({})
    } else {
        spec
    };
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let at = e.path().to_string();
        let path = if at == "." {
            path.to_owned()
        } else {
            format!("{path}.{at}")
        };
        let mut message = e.inner().to_string();
        if message.starts_with("missing field") && format!("{path} {message}").contains("defaultActions") {
            message.push_str(
                "; every phase needs its default: defaultActions: {preDNS: Allow|Deny|Alert, preRequest: …, postResponse: …}",
            );
        }
        CompileError::new(path, message)
    })
}

/// Compiles the policy a file describes. With `proxy` given, or exactly one
/// `EgressProxy` in the file, that proxy's configuration and settings are used;
/// otherwise the file must hold exactly one `ProxyConfiguration`. Rule groups
/// are looked up in the configuration's namespace.
pub fn compile_documents(
    yaml: &str,
    proxy: Option<&str>,
) -> Result<CompiledPolicy, Vec<CompileError>> {
    let docs = parse_documents(yaml)?;
    let one_error = |path: &str, message: String| vec![CompileError::new(path, message)];
    let chosen_proxy = match proxy {
        Some(name) => match docs.proxies.iter().find(|(_, p)| p.name == name) {
            Some(p) => Some(p),
            None => {
                return Err(one_error(
                    "documents",
                    format!("no EgressProxy named {name:?} in the file"),
                ));
            }
        },
        None => match docs.proxies.as_slice() {
            [] => None,
            [one] => Some(one),
            many => {
                let names: Vec<&str> = many.iter().map(|(_, p)| p.name.as_str()).collect();
                return Err(one_error(
                    "documents",
                    format!(
                        "the file holds several EgressProxy documents ({}); choose one",
                        names.join(", ")
                    ),
                ));
            }
        },
    };
    if let Some((namespace, proxy)) = chosen_proxy {
        let wanted = &proxy.spec.configuration_ref.name;
        let Some((_, config)) = docs
            .configurations
            .iter()
            .find(|(ns, c)| ns == namespace && c.name == *wanted)
        else {
            return Err(one_error(
                "configurationRef.name",
                format!(
                    "EgressProxy {:?} refers to ProxyConfiguration {wanted:?}, which is not in the file (namespace {namespace:?})",
                    proxy.name
                ),
            ));
        };
        return docs.with_available(namespace, |available| {
            compile_for_proxy(proxy, config, available)
        });
    }
    match docs.configurations.as_slice() {
        [(namespace, config)] => {
            docs.with_available(namespace, |available| compile(config, available))
        }
        [] => Err(one_error(
            "documents",
            "the file holds no ProxyConfiguration".to_owned(),
        )),
        many => {
            let names: Vec<&str> = many.iter().map(|(_, c)| c.name.as_str()).collect();
            Err(one_error(
                "documents",
                format!(
                    "the file holds several ProxyConfiguration documents ({}); add an EgressProxy that names one",
                    names.join(", ")
                ),
            ))
        }
    }
}
