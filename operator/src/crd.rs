//! The custom resources of API group `egress.dev/v1alpha1`, wrapping
//! the policy crate's spec types (one definition of each spec, no copies),
//! with the statuses the operator writes and the CRD each generates.
//!
//! `kube`'s `CustomResource` derive must sit on the spec struct, which lives
//! in the pure policy crate; so the resource types are declared here with a
//! small macro that implements what the derive would (the `Resource` trait,
//! serialisation with `apiVersion` and `kind`, the CRD with the derive's own
//! schema settings).

use std::borrow::Cow;

use egress_policy::spec::{
    ClusterProxyRuleGroupSpec, EgressProxySpec, ProxyConfigurationSpec, ProxyListSpec,
    ProxyRuleGroupSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every resource.
pub const GROUP: &str = "egress.dev";
/// API version of every resource.
pub const VERSION: &str = "v1alpha1";

macro_rules! custom_resource {
    ($(#[$doc:meta])* $kind:ident, $spec:ty, $status:ty, plural = $plural:literal) => {
        custom_resource!(@define $(#[$doc])* $kind, $spec, $status, $plural, k8s_openapi::NamespaceResourceScope);

        impl $kind {
            /// A resource named `name` in `namespace`.
            pub fn new(name: &str, namespace: &str, spec: $spec) -> Self {
                $kind {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        namespace: Some(namespace.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec,
                    status: None,
                }
            }
        }
    };
    ($(#[$doc:meta])* $kind:ident, $spec:ty, $status:ty, plural = $plural:literal, cluster) => {
        custom_resource!(@define $(#[$doc])* $kind, $spec, $status, $plural, k8s_openapi::ClusterResourceScope);

        impl $kind {
            /// A resource named `name`.
            pub fn new(name: &str, spec: $spec) -> Self {
                $kind {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec,
                    status: None,
                }
            }
        }
    };
    (@define $(#[$doc:meta])* $kind:ident, $spec:ty, $status:ty, $plural:literal, $scope:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $kind {
            /// Standard object metadata.
            #[schemars(skip)]
            pub metadata: ObjectMeta,
            /// What the user asks for.
            pub spec: $spec,
            /// What the operator observed (written by the operator only).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }

        impl kube::Resource for $kind {
            type DynamicType = ();
            type Scope = $scope;

            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }

            fn kind(_: &()) -> Cow<'_, str> {
                stringify!($kind).into()
            }

            fn version(_: &()) -> Cow<'_, str> {
                VERSION.into()
            }

            fn api_version(_: &()) -> Cow<'_, str> {
                concat!("egress.dev/", "v1alpha1").into()
            }

            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl Serialize for $kind {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut obj = ser.serialize_struct(stringify!($kind), 5)?;
                obj.serialize_field("apiVersion", &<$kind as kube::Resource>::api_version(&()))?;
                obj.serialize_field("kind", &<$kind as kube::Resource>::kind(&()))?;
                obj.serialize_field("metadata", &self.metadata)?;
                obj.serialize_field("spec", &self.spec)?;
                if let Some(status) = &self.status {
                    obj.serialize_field("status", status)?;
                }
                obj.end()
            }
        }
    };
}

custom_resource!(
    /// Ordered rules per phase.
    ProxyRuleGroup,
    ProxyRuleGroupSpec,
    RuleGroupStatus,
    plural = "proxyrulegroups"
);
custom_resource!(
    /// Ordered rule groups and a default action per phase.
    ProxyConfiguration,
    ProxyConfigurationSpec,
    ConfigurationStatus,
    plural = "proxyconfigurations"
);
custom_resource!(
    /// One gateway: its configuration, listeners, TLS interception and pods.
    EgressProxy,
    EgressProxySpec,
    EgressProxyStatus,
    plural = "egressproxies"
);
custom_resource!(
    /// A named list of domains, CIDRs or patterns that conditions use by name.
    ProxyList,
    ProxyListSpec,
    ListStatus,
    plural = "proxylists"
);

custom_resource!(
    /// The cluster's baseline: rules every proxy in the namespaces it
    /// selects obeys before its own (administrators only, by RBAC).
    ClusterProxyRuleGroup,
    ClusterProxyRuleGroupSpec,
    RuleGroupStatus,
    plural = "clusterproxyrulegroups",
    cluster
);
custom_resource!(
    /// A named list for the baseline's conditions.
    ClusterProxyList,
    ProxyListSpec,
    ListStatus,
    plural = "clusterproxylists",
    cluster
);

/// `ProxyList.status` and `ClusterProxyList.status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`, `InUse`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Entries in the list.
    #[serde(default)]
    pub entries: i64,
    /// The rule groups whose conditions name this list.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// `ProxyRuleGroup.status` and `ClusterProxyRuleGroup.status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleGroupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Compiled`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Rules per phase.
    #[serde(default)]
    pub rules: RuleCounts,
    /// The EgressProxies that use this group: whose configuration lists it
    /// or, for a ClusterProxyRuleGroup, whose namespace it selects
    /// (`<namespace>/<name>`).
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// Rules per phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleCounts {
    /// PreDNS rules.
    #[serde(rename = "preDNS")]
    pub pre_dns: i64,
    /// PreREQUEST rules.
    pub pre_request: i64,
    /// PostRESPONSE rules.
    pub post_response: i64,
}

/// `ProxyConfiguration.status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Compiled`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Rule groups listed.
    #[serde(default)]
    pub groups: i64,
    /// Content hash of the compiled policy, when it compiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// The EgressProxies that enforce this configuration.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// `EgressProxy.status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressProxyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `PolicyCompiled`, `CertificateReady`, `Progressing`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Proxy URLs clients use (`http://<proxy>.<ns>.svc:<port>` and the HTTPS one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Content hash of the policy in the ConfigMap the gateway reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// When the interception sub-CA expires (RFC 3339); renewed well before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept_ca_not_after: Option<String>,
    /// Gateway pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The pods the proxy serves through the injection webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<ClientsStatus>,
}

/// `EgressProxy.status.clients`: what injected pods get and which escaped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientsStatus {
    /// The `NO_PROXY` injected pods get.
    pub no_proxy: String,
    /// Namespaces served (labelled `egress.dev/injection=enabled` and selected).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Pods carrying this proxy's settings.
    #[serde(default)]
    pub injected_pods: i64,
    /// Pods this proxy should serve that run without its settings: created
    /// while the webhook was unreachable, or before their namespace was
    /// labelled.
    #[serde(default)]
    pub escaped_pods: i64,
    /// Some of them, `<namespace>/<pod>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escaped: Vec<String>,
    /// What the counts mean and what to do.
    #[serde(default)]
    pub message: String,
}

/// Where clients find the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `http://<proxy>.<ns>.svc:<httpPort>`.
    pub http: String,
    /// `https://<proxy>.<ns>.svc:<httpsPort>`.
    pub https: String,
}

/// A printer column of `kubectl get`.
fn column(
    name: &str,
    type_: &str,
    json_path: &str,
    description: &str,
) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.to_owned(),
        type_: type_.to_owned(),
        json_path: json_path.to_owned(),
        description: Some(description.to_owned()),
        ..CustomResourceColumnDefinition::default()
    }
}

fn condition_column(type_: &str, description: &str) -> CustomResourceColumnDefinition {
    column(
        type_,
        "string",
        &format!(".status.conditions[?(@.type==\"{type_}\")].status"),
        description,
    )
}

/// The CRD of resource `K`: its schema from `K`'s `JsonSchema`, generated
/// with the settings `kube`'s derive uses (inlined, structural, no `$schema`).
fn crd<K>(
    short_names: &[&str],
    columns: Vec<CustomResourceColumnDefinition>,
) -> CustomResourceDefinition
where
    K: kube::Resource<DynamicType = ()> + JsonSchema,
    K::Scope: 'static,
{
    let cluster_scoped = std::any::TypeId::of::<K::Scope>()
        == std::any::TypeId::of::<k8s_openapi::ClusterResourceScope>();
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube_core::schema::StructuralSchemaRewriter)
        .with_transform(kube_core::schema::OptionalEnum)
        .with_transform(kube_core::schema::OptionalIntOrString)
        .into_generator();
    let schema: JSONSchemaProps = serde_json::to_value(generator.into_root_schema_for::<K>())
        .and_then(serde_json::from_value)
        .unwrap_or_default();
    let plural = K::plural(&()).into_owned();
    let kind = K::kind(&()).into_owned();
    let mut columns = columns;
    columns.push(column(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "Time since creation",
    ));
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{plural}.{GROUP}")),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.to_owned(),
            names: CustomResourceDefinitionNames {
                categories: Some(vec!["egress".to_owned()]),
                kind: kind.clone(),
                list_kind: Some(format!("{kind}List")),
                plural,
                short_names: Some(short_names.iter().map(|s| s.to_string()).collect()),
                singular: Some(kind.to_ascii_lowercase()),
            },
            scope: if cluster_scoped {
                "Cluster"
            } else {
                "Namespaced"
            }
            .to_owned(),
            versions: vec![CustomResourceDefinitionVersion {
                additional_printer_columns: Some(columns),
                name: VERSION.to_owned(),
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema),
                }),
                served: true,
                storage: true,
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
                    scale: None,
                }),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

/// The printer columns of a rule group kind.
fn rule_group_columns(used_by: &str) -> Vec<CustomResourceColumnDefinition> {
    vec![
        column("PreDNS", "integer", ".status.rules.preDNS", "PreDNS rules"),
        column(
            "PreRequest",
            "integer",
            ".status.rules.preRequest",
            "PreREQUEST rules",
        ),
        column(
            "PostResponse",
            "integer",
            ".status.rules.postResponse",
            "PostRESPONSE rules",
        ),
        column("Used By", "string", ".status.usedBy", used_by),
        condition_column("Compiled", "Whether every rule compiles"),
    ]
}

/// The printer columns of a list kind.
fn list_columns(used_by: &str) -> Vec<CustomResourceColumnDefinition> {
    vec![
        column("Type", "string", ".spec.type", "What the entries are"),
        column(
            "Entries",
            "integer",
            ".status.entries",
            "Entries in the list",
        ),
        column("Used By", "string", ".status.usedBy", used_by),
        condition_column("Valid", "Whether every entry is well formed"),
    ]
}

/// Every CRD, with the file name `crdgen` writes it to.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        (
            "proxyrulegroups.yaml",
            crd::<ProxyRuleGroup>(
                &["prg"],
                rule_group_columns("EgressProxies whose configuration lists it"),
            ),
        ),
        (
            "proxyconfigurations.yaml",
            crd::<ProxyConfiguration>(
                &["pcfg"],
                vec![
                    column("Groups", "integer", ".status.groups", "Rule groups listed"),
                    condition_column(
                        "Compiled",
                        "Whether the configuration and its groups compile",
                    ),
                    column(
                        "Used By",
                        "string",
                        ".status.usedBy",
                        "EgressProxies enforcing it",
                    ),
                ],
            ),
        ),
        (
            "proxylists.yaml",
            crd::<ProxyList>(
                &["plist"],
                list_columns("ProxyRuleGroups whose conditions name it"),
            ),
        ),
        (
            "clusterproxyrulegroups.yaml",
            crd::<ClusterProxyRuleGroup>(
                &["cprg"],
                rule_group_columns("EgressProxies (namespace/name) it applies to"),
            ),
        ),
        (
            "clusterproxylists.yaml",
            crd::<ClusterProxyList>(
                &["cplist"],
                list_columns("ClusterProxyRuleGroups whose conditions name it"),
            ),
        ),
        (
            "egressproxies.yaml",
            crd::<EgressProxy>(
                &["egp"],
                vec![
                    condition_column("Ready", "Gateway pods serve a policy"),
                    column(
                        "Endpoint",
                        "string",
                        ".status.endpoints.http",
                        "Proxy URL for clients",
                    ),
                    column(
                        "Escaped",
                        "integer",
                        ".status.clients.escapedPods",
                        "Served pods running without the proxy settings",
                    ),
                    column(
                        "Interception",
                        "boolean",
                        ".spec.tlsInterception.enabled",
                        "TLS interception",
                    ),
                    column(
                        "Replicas",
                        "integer",
                        ".status.readyReplicas",
                        "Gateway pods ready",
                    ),
                ],
            ),
        ),
    ]
}

/// The CRDs as the YAML `crdgen` writes (one file each).
pub fn yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_saphyr::to_string(crd).unwrap_or_default();
    format!("# Generated by `cargo run -p egress-operator --bin crdgen`; do not edit.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(file: &str) -> serde_json::Value {
        let (_, crd) = all()
            .into_iter()
            .find(|(name, _)| *name == file)
            .expect("crd");
        serde_json::to_value(&crd.spec.versions[0].schema).expect("json")["openAPIV3Schema"].clone()
    }

    #[test]
    fn schemas_carry_what_the_api_server_can_enforce() {
        let groups = schema_of("proxyrulegroups.yaml");
        let rules = &groups["properties"]["spec"]["properties"]["rules"]["properties"];
        let pre_dns = &rules["preDNS"];
        assert_eq!(pre_dns["maxItems"], 1000, "{pre_dns}");
        assert!(
            pre_dns["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .is_some_and(|r| r.contains("distinct()"))
        );
        let rule = &pre_dns["items"]["properties"];
        assert_eq!(rule["name"]["pattern"], "^[a-zA-Z0-9-]{1,128}$");
        assert_eq!(
            rule["action"]["enum"],
            serde_json::json!(["Allow", "Deny", "Alert"])
        );
        assert_eq!(
            pre_dns["items"]["required"],
            serde_json::json!(["action", "name"])
        );
        let condition = &rule["conditions"]["items"]["properties"];
        assert_eq!(
            condition["operator"]["enum"].as_array().map(Vec::len),
            Some(egress_policy::operator::Operator::NAMES.len())
        );
        assert_eq!(
            condition["values"]["items"]["x-kubernetes-int-or-string"],
            true
        );

        let configuration = schema_of("proxyconfigurations.yaml");
        let spec = &configuration["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["defaultActions"]));
        assert_eq!(
            spec["properties"]["defaultActions"]["required"],
            serde_json::json!(["postResponse", "preDNS", "preRequest"])
        );

        let proxy = schema_of("egressproxies.yaml");
        let listeners = &proxy["properties"]["spec"]["properties"]["listeners"]["properties"];
        assert_eq!(listeners["httpPort"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(listeners["httpPort"]["maximum"].as_f64(), Some(65535.0));
        assert!(proxy["properties"]["status"].is_object());
    }

    #[test]
    fn resources_serialise_with_their_type() {
        let group = ProxyRuleGroup::new("g", "ns", ProxyRuleGroupSpec::default());
        let json = serde_json::to_value(&group).expect("json");
        assert_eq!(json["apiVersion"], "egress.dev/v1alpha1");
        assert_eq!(json["kind"], "ProxyRuleGroup");
        assert_eq!(json["metadata"]["namespace"], "ns");
        let back: ProxyRuleGroup = serde_json::from_value(json).expect("reads back");
        assert_eq!(back.spec, group.spec);
    }
}
