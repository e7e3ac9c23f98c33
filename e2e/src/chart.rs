//! The product as the Helm chart installs it, for the components a test runs
//! outside a pod: the operator gets the environment of the operator
//! Deployment the chart installed and acts as its ServiceAccount, so a
//! permission the chart does not grant fails the test as it fails an install.
//! [`ControlPlane::kubeconfig_as`] gives any other component (a gateway, a
//! tenant) the identity it has in a real cluster.

use std::path::{Path, PathBuf};

use crate::ControlPlane;
use crate::error::{HarnessError, setup_error};

/// `charts/egress-proxy`.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/egress-proxy")
}

/// A release of the chart, installed with `helm install`.
#[derive(Clone, Debug)]
pub struct Release {
    /// The release name.
    pub name: String,
    /// The release namespace (the operator's).
    pub namespace: String,
}

/// The operator as the chart runs it, for a process on this machine.
#[derive(Clone, Debug)]
pub struct InstalledOperator {
    /// The container's arguments.
    pub args: Vec<String>,
    /// The container's environment, the downward API's values filled in for
    /// a pod named [`InstalledOperator::pod`].
    pub env: Vec<(String, String)>,
    /// The pod name the environment was filled in for (the operator's
    /// leader election identity).
    pub pod: String,
    /// A kubeconfig acting as the operator's ServiceAccount.
    pub kubeconfig: PathBuf,
}

impl Release {
    /// `helm install` of the chart into `namespace` (created), with `values`
    /// as `--set` arguments; also what it printed (the chart's NOTES). The
    /// CRDs come with it (from the chart's `crds/`).
    pub fn install(
        plane: &ControlPlane,
        name: &str,
        namespace: &str,
        values: &[&str],
    ) -> Result<(Release, String), HarnessError> {
        let mut install = plane.helm();
        install.args(["install", name]).arg(chart_dir()).args([
            "--namespace",
            namespace,
            "--create-namespace",
        ]);
        for value in values {
            install.args(["--set", value]);
        }
        let output = install.output().map_err(setup_error("helm install"))?;
        if !output.status.success() {
            return Err(HarnessError::Setup(format!(
                "helm install {name} failed:\n{}",
                crate::combined_output(&output)
            )));
        }
        let release = Release {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        };
        Ok((
            release,
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ))
    }

    /// The operator Deployment this release installed, as the API server
    /// stores it.
    pub fn operator_deployment(
        &self,
        plane: &ControlPlane,
    ) -> Result<serde_json::Value, HarnessError> {
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/name=egress-operator",
            self.name
        );
        let list = get_json(
            plane,
            &["deployments", "-n", &self.namespace, "-l", &selector],
        )?;
        list["items"]
            .as_array()
            .and_then(|items| items.first())
            .cloned()
            .ok_or_else(|| {
                HarnessError::Setup(format!(
                    "release {} installed no operator Deployment in {}",
                    self.name, self.namespace
                ))
            })
    }

    /// What a process needs to run as the operator pod `pod` of this
    /// release: its arguments, its environment and its identity (a
    /// kubeconfig written into `dir`).
    pub fn operator(
        &self,
        plane: &ControlPlane,
        pod: &str,
        dir: &Path,
    ) -> Result<InstalledOperator, HarnessError> {
        let deployment = self.operator_deployment(plane)?;
        let spec = &deployment["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let env = environment(container, &self.namespace, Some(pod))?;
        let account = spec["serviceAccountName"].as_str().ok_or_else(|| {
            HarnessError::Setup("the operator pod names no ServiceAccount".into())
        })?;
        let kubeconfig = plane.kubeconfig_as_service_account(&self.namespace, account, dir)?;
        Ok(InstalledOperator {
            args: arguments(container),
            env,
            pod: pod.to_owned(),
            kubeconfig,
        })
    }
}

/// A gateway as the operator rendered it, for a process on this machine:
/// the arguments and environment of its Deployment, and a kubeconfig acting
/// as its ServiceAccount (with the RBAC the operator bound to it).
#[derive(Clone, Debug)]
pub struct RenderedGateway {
    /// The container's arguments, listeners moved to this machine, then
    /// `--kubeconfig`.
    pub args: Vec<String>,
    /// The container's environment, the downward API's namespace filled in.
    pub env: Vec<(String, String)>,
}

impl RenderedGateway {
    /// Reads Deployment `namespace/name` (as the operator rendered it) and
    /// writes the gateway's kubeconfig into `dir`. `overrides` replaces the
    /// values of the flags it names: the listeners (e.g. `("--http-listen",
    /// "127.0.0.1:0")`: the pod's addresses are not this machine's), and
    /// `--shutdown-delay` (no endpoints drop a local process). A pod that
    /// mounts volumes cannot run here: that is an error, not a silent
    /// difference.
    pub fn read(
        plane: &ControlPlane,
        namespace: &str,
        name: &str,
        overrides: &[(&str, String)],
        dir: &Path,
    ) -> Result<RenderedGateway, HarnessError> {
        let deployment = get_json(plane, &["deployment", name, "-n", namespace])?;
        let spec = &deployment["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let mut args = arguments(container);
        if let Some(mounts) = container["volumeMounts"]
            .as_array()
            .filter(|m| !m.is_empty())
        {
            return Err(HarnessError::Setup(format!(
                "the rendered gateway mounts volumes a local process does not have: {mounts:?}"
            )));
        }
        for (flag, value) in overrides {
            match args.iter().position(|a| a == flag) {
                Some(at) if at + 1 < args.len() => args[at + 1].clone_from(value),
                _ => {
                    return Err(HarnessError::Setup(format!(
                        "the rendered gateway has no {flag}: {args:?}"
                    )));
                }
            }
        }
        let account = spec["serviceAccountName"].as_str().unwrap_or("default");
        let kubeconfig = plane.kubeconfig_as_service_account(namespace, account, dir)?;
        args.push("--kubeconfig".to_owned());
        args.push(kubeconfig.display().to_string());
        let env = environment(container, namespace, None)?;
        Ok(RenderedGateway { args, env })
    }
}

/// `kubectl get <what> -o json`.
fn get_json(plane: &ControlPlane, what: &[&str]) -> Result<serde_json::Value, HarnessError> {
    let mut get = plane.kubectl();
    get.arg("get").args(what).args(["-o", "json"]);
    let output = get.output().map_err(setup_error("kubectl get"))?;
    serde_json::from_slice(&output.stdout).map_err(|e| {
        HarnessError::Setup(format!(
            "kubectl get {}: {e}\n{}",
            what.join(" "),
            crate::combined_output(&output)
        ))
    })
}

/// A container's arguments.
fn arguments(container: &serde_json::Value) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// A container's environment as the kubelet gives it to the pod `pod` in
/// `namespace`: the downward API's fields filled in.
fn environment(
    container: &serde_json::Value,
    namespace: &str,
    pod: Option<&str>,
) -> Result<Vec<(String, String)>, HarnessError> {
    if container.get("envFrom").is_some() {
        return Err(HarnessError::Setup(
            "the container takes its environment from objects (envFrom): not supported here".into(),
        ));
    }
    let mut env = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        let value = match (var["valueFrom"]["fieldRef"]["fieldPath"].as_str(), pod) {
            (Some("metadata.namespace"), _) => namespace.to_owned(),
            (Some("metadata.name"), Some(pod)) => pod.to_owned(),
            (Some(other), _) => {
                return Err(HarnessError::Setup(format!(
                    "{name}: no value for the fieldRef {other}"
                )));
            }
            (None, _) if var.get("valueFrom").is_some() => {
                return Err(HarnessError::Setup(format!(
                    "{name}: a value from an object is not supported here: {}",
                    var["valueFrom"]
                )));
            }
            (None, _) => var["value"].as_str().unwrap_or_default().to_owned(),
        };
        env.push((name, value));
    }
    Ok(env)
}

/// The user name of a ServiceAccount's tokens.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The groups a ServiceAccount's tokens carry.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_owned(),
    ]
}

impl ControlPlane {
    /// Writes a kubeconfig to `path` that acts as `user` in `groups`
    /// (impersonation through the admin credentials: the API server
    /// authorizes every request as that user, nothing more).
    pub fn kubeconfig_as(
        &self,
        user: &str,
        groups: &[String],
        path: &Path,
    ) -> Result<PathBuf, HarnessError> {
        let text = std::fs::read_to_string(&self.kubeconfig).map_err(setup_error("kubeconfig"))?;
        let mut kubeconfig: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| HarnessError::Setup(format!("the admin kubeconfig is not JSON: {e}")))?;
        kubeconfig["users"][0]["user"]["as"] = user.into();
        kubeconfig["users"][0]["user"]["as-groups"] = groups.into();
        std::fs::write(path, kubeconfig.to_string()).map_err(setup_error("kubeconfig"))?;
        Ok(path.to_path_buf())
    }

    /// A kubeconfig acting as ServiceAccount `namespace/name`, in `dir`.
    pub fn kubeconfig_as_service_account(
        &self,
        namespace: &str,
        name: &str,
        dir: &Path,
    ) -> Result<PathBuf, HarnessError> {
        self.kubeconfig_as(
            &service_account_user(namespace, name),
            &service_account_groups(namespace),
            &dir.join(format!("sa-{namespace}-{name}.kubeconfig")),
        )
    }
}
