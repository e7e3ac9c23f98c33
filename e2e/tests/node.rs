//! Proof that the node is real: Deployments get Running pods, Services route
//! by ClusterIP and by DNS name, `kubectl logs` and `kubectl exec` work, pods
//! reach the API server through the `kubernetes` Service, a NetworkPolicy is
//! enforced and its removal lifts it; and the product installed with its
//! chart serves client pods of every kind (`node/installed.rs`).
//!
//! All tests share one cluster (control plane and node) per test binary and
//! keep to namespaces of their own. Servers that stand for destinations
//! outside the cluster listen on the host side of the pod network.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egress_e2e::node::{Cluster, HOST_ADDRESS, images};
use egress_e2e::{eventually, run};

#[path = "node/installed.rs"]
mod installed;

/// Exit code and stdout + stderr of a command.
fn attempt(mut command: Command) -> (i32, String) {
    let output = command.output().expect("command runs");
    let code = output.status.code().unwrap_or(-1);
    (code, egress_e2e::combined_output(&output))
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> Command {
    let mut command = cluster.kubectl();
    command.args(args);
    command
}

fn apply(cluster: &Cluster, manifest: &str) {
    let output =
        egress_e2e::run_with_stdin(kubectl(cluster, &["apply", "-f", "-"]), manifest.as_bytes())
            .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl apply failed:\n{}\n{manifest}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `kubectl exec` of a command in a pod: (exit code, output).
fn exec(cluster: &Cluster, namespace: &str, pod: &str, command: &[&str]) -> (i32, String) {
    let mut args = vec!["exec", "-n", namespace, pod, "--"];
    args.extend_from_slice(command);
    attempt(kubectl(cluster, &args))
}

/// A namespace (its `default` ServiceAccount comes from kube-controller-manager).
fn namespace(cluster: &Cluster, name: &str) {
    run(kubectl(cluster, &["create", "namespace", name]));
    eventually(
        Duration::from_secs(30),
        "the default ServiceAccount",
        || {
            attempt(kubectl(
                cluster,
                &["get", "serviceaccount", "default", "-n", name],
            ))
            .0
            .eq(&0)
            .then_some(())
        },
    );
}

/// A bare pod of the client image that sleeps, Ready when this returns.
fn client_pod(cluster: &Cluster, namespace: &str, name: &str, labels: &str) {
    apply(
        cluster,
        &format!(
            r#"{{"apiVersion": "v1", "kind": "Pod",
  "metadata": {{"name": "{name}", "namespace": "{namespace}", "labels": {labels}}},
  "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "client",
    "image": "{image}", "imagePullPolicy": "Never",
    "command": ["sleep", "3600"]}}]}}}}"#,
            image = images::CLIENT
        ),
    );
    run(kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Ready",
            "--timeout=120s",
            "-n",
            namespace,
            &format!("pod/{name}"),
        ],
    ));
}

/// A Deployment of busybox httpd answering `hello from <pod>`, and a Service
/// `web` on port 80 in front of it; returns when the Deployment is available.
fn web(cluster: &Cluster, namespace: &str, replicas: u32) {
    apply(
        cluster,
        &format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
{{"apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {{"name": "web", "namespace": "{namespace}"}},
  "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "web"}}}},
    "template": {{"metadata": {{"labels": {{"app": "web"}}}},
      "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "httpd",
        "image": "{image}", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "mkdir -p /tmp/www && echo \"hello from $HOSTNAME\" > /tmp/www/index.html && echo \"serving as $HOSTNAME\" && exec httpd -f -v -p 8080 -h /tmp/www"],
        "ports": [{{"containerPort": 8080}}],
        "readinessProbe": {{"tcpSocket": {{"port": 8080}}, "periodSeconds": 1}}}}]}}}}}}}},
{{"apiVersion": "v1", "kind": "Service",
  "metadata": {{"name": "web", "namespace": "{namespace}"}},
  "spec": {{"selector": {{"app": "web"}}, "ports": [{{"port": 80, "targetPort": 8080}}]}}}}
]}}"#,
            image = images::CLIENT
        ),
    );
    run(kubectl(
        cluster,
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            namespace,
            "--timeout=180s",
        ],
    ));
}

/// A plain HTTP server on the host side of the pod network, standing for a
/// destination outside the cluster: answers `from outside: <path>` and
/// records the paths it was asked for.
struct Outside {
    addr: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Outside {
    fn start() -> Outside {
        let listener = TcpListener::bind((HOST_ADDRESS, 0)).expect("bind on the host address");
        let addr = listener.local_addr().expect("addr");
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    loop {
                        let mut header = String::new();
                        match reader.read_line(&mut header) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if header == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let body = format!("from outside: {path}\n");
                    seen.lock().expect("lock").push(path);
                    let _ = (&stream).write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                });
            }
        });
        Outside { addr, paths }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.paths.lock().expect("lock").clone()
    }
}

#[test]
fn a_deployment_runs_and_its_service_answers_by_address_and_by_name() {
    let cluster = Cluster::shared();
    let ns = "node-web";
    namespace(cluster, ns);
    web(cluster, ns, 2);
    client_pod(cluster, ns, "client", r#"{"app": "client"}"#);

    let phases = run(kubectl(
        cluster,
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ],
    ));
    assert_eq!(phases, "Running Running", "both replicas run");
    let pod_ips = run(kubectl(
        cluster,
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ],
    ));
    assert!(
        pod_ips.split(' ').all(|ip| ip.starts_with("10.244.0.")),
        "pod IPs from the node's range: {pod_ips}"
    );

    // By ClusterIP, by full DNS name, by short name (the pod's search path).
    let cluster_ip = cluster_ip(cluster, ns, "web");
    assert!(cluster_ip.starts_with("10.0.0."), "{cluster_ip}");
    // kube-proxy programs the Service's rules after its endpoints are ready
    // (until then a connection to it is refused): wait for that first.
    let by_address = format!("http://{cluster_ip}/");
    eventually(
        Duration::from_secs(30),
        "kube-proxy to serve the Service",
        || {
            let curl = ["curl", "-sS", "-m", "10", &by_address];
            (exec(cluster, ns, "client", &curl).0 == 0).then_some(())
        },
    );
    for url in [
        format!("http://{cluster_ip}/"),
        format!("http://web.{ns}.svc.cluster.local/"),
        "http://web/".to_owned(),
    ] {
        let (code, output) = exec(cluster, ns, "client", &["curl", "-sS", "-m", "10", &url]);
        assert_eq!(code, 0, "{url}: {output}");
        assert!(output.starts_with("hello from web-"), "{url}: {output}");
    }
    let (code, resolv) = exec(cluster, ns, "client", &["cat", "/etc/resolv.conf"]);
    assert_eq!(code, 0, "{resolv}");
    assert!(resolv.contains("nameserver 10.0.0.10"), "{resolv}");
    let (code, lookup) = exec(
        cluster,
        ns,
        "client",
        &["nslookup", "kubernetes.default.svc.cluster.local"],
    );
    assert_eq!(code, 0, "{lookup}");
    assert!(lookup.contains("10.0.0.1"), "{lookup}");

    // The API server through the `kubernetes` Service, with the mounted CA.
    let (code, version) = exec(
        cluster,
        ns,
        "client",
        &[
            "curl",
            "-sS",
            "-m",
            "10",
            "--cacert",
            "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            "https://kubernetes.default.svc/version",
        ],
    );
    assert_eq!(code, 0, "{version}");
    assert!(version.contains("\"gitVersion\": \"v1.37.2\""), "{version}");

    // logs and exec (with stdin) through the API server and the kubelet.
    let logs = run(kubectl(cluster, &["logs", "-n", ns, "deployment/web"]));
    assert!(logs.contains("serving as web-"), "{logs}");
    let echoed = egress_e2e::run_with_stdin(
        kubectl(cluster, &["exec", "-i", "-n", ns, "client", "--", "cat"]),
        b"through stdin\n",
    )
    .expect("kubectl exec -i runs");
    assert_eq!(
        String::from_utf8_lossy(&echoed.stdout),
        "through stdin\n",
        "{}",
        String::from_utf8_lossy(&echoed.stderr)
    );
}

/// curl from a pod with a short timeout: (exit code, output).
/// The ClusterIP of Service `name`.
fn cluster_ip(cluster: &Cluster, ns: &str, name: &str) -> String {
    let jsonpath = "jsonpath={.spec.clusterIP}";
    run(kubectl(
        cluster,
        &["get", "service", name, "-n", ns, "-o", jsonpath],
    ))
}

fn fetch_from(cluster: &Cluster, ns: &str, pod: &str, url: &str) -> (i32, String) {
    exec(cluster, ns, pod, &["curl", "-sS", "-m", "3", url])
}

#[test]
fn a_network_policy_denying_egress_is_enforced_and_removing_it_restores_access() {
    let cluster = Cluster::shared();
    let ns = "node-policy";
    let outside = Outside::start();
    namespace(cluster, ns);
    web(cluster, ns, 1);
    client_pod(cluster, ns, "confined", r#"{"role": "confined"}"#);
    client_pod(cluster, ns, "free", r#"{"role": "free"}"#);
    let web_url = format!("http://web.{ns}.svc.cluster.local/");
    let outside_url = outside.url("/policy");
    for pod in ["confined", "free"] {
        for url in [&web_url, &outside_url] {
            let (code, output) = fetch_from(cluster, ns, pod, url);
            assert_eq!(code, 0, "{pod} before the policy, {url}: {output}");
        }
    }

    apply(
        cluster,
        &format!(
            r#"{{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
  "metadata": {{"name": "deny-egress", "namespace": "{ns}"}},
  "spec": {{"podSelector": {{"matchLabels": {{"role": "confined"}}}},
    "policyTypes": ["Egress"], "egress": []}}}}"#
        ),
    );
    // Enforced for the selected pod, towards pods (its DNS lookup included)
    // and towards the host. kube-router rejects what a policy denies, so curl
    // fails with "couldn't connect" (7), or, by name, "couldn't resolve" (6)
    // as the DNS query is rejected too; 28 would be a timeout (a dropping
    // enforcer). The free pod, checked below, shows the paths still work.
    for url in [&web_url, &outside_url] {
        let (code, output) = eventually(
            Duration::from_secs(60),
            "the policy to block the confined pod",
            || {
                let (code, output) = fetch_from(cluster, ns, "confined", url);
                (code != 0).then_some((code, output))
            },
        );
        assert!(
            [6, 7, 28].contains(&code),
            "{url}: curl failed for another reason ({code}): {output}"
        );
    }
    let by_address = format!("http://{}/", cluster_ip(cluster, ns, "web"));
    let (code, output) = fetch_from(cluster, ns, "confined", &by_address);
    assert!(
        [7, 28].contains(&code),
        "by ClusterIP, no DNS involved ({code}): {output}"
    );
    // Other pods are not affected.
    for url in [&web_url, &outside_url] {
        let (code, output) = fetch_from(cluster, ns, "free", url);
        assert_eq!(code, 0, "free pod under the policy, {url}: {output}");
    }

    run(kubectl(
        cluster,
        &["delete", "networkpolicy", "deny-egress", "-n", ns],
    ));
    for url in [&web_url, &outside_url] {
        eventually(
            Duration::from_secs(60),
            "access restored once the policy is gone",
            || (fetch_from(cluster, ns, "confined", url).0 == 0).then_some(()),
        );
    }
    assert!(
        outside.seen().iter().all(|p| p == "/policy"),
        "{:?}",
        outside.seen()
    );
}
