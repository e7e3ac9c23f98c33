//! Objects a test creates as an administrator would, through the API.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Creates `object` (JSON) through `api`; panics with the API's answer when
/// it is refused.
pub async fn create<K>(api: &Api<K>, object: serde_json::Value) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("a valid object");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("cannot create {object:?}: {e}"))
}

/// A namespace with `labels` and its `default` ServiceAccount (which
/// kube-controller-manager would create in a full cluster; the
/// ServiceAccount admission plugin needs it).
pub async fn namespace(client: &Client, name: &str, labels: serde_json::Value) {
    let metadata = serde_json::json!({"metadata": {"name": name, "labels": labels}});
    create(&Api::<Namespace>::all(client.clone()), metadata).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    create(
        &accounts,
        serde_json::json!({"metadata": {"name": "default"}}),
    )
    .await;
}
