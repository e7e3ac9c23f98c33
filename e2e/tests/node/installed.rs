//! The product installed as users install it, on the real node: `helm
//! install` of the chart with its default values (the images are this
//! workspace's release binaries, named as the chart names them), two
//! operator pods electing a leader under the chart's RBAC, the API server
//! calling the webhook through its Service, the seed example applied by
//! hand, gateway pods, and client pods of every kind that get their settings
//! from the webhook alone. The admin credentials do only what an admin does
//! by hand: install, label, apply, and read logs.
//!
//! The tests here share one installation and take turns (a rollout or an
//! enforced namespace would otherwise be seen by the other).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use egress_e2e::chart::chart_dir;
use egress_e2e::node::{Cluster, OUTSIDE_ADDRESS, OUTSIDE_NAME, images};
use egress_e2e::run;

use super::{apply, attempt, eventually, exec, kubectl, namespace};

const RELEASE: &str = "egress-proxy";
const RELEASE_NAMESPACE: &str = "egress-system";
/// The seed's EgressProxy, in the release namespace (a shared proxy: it may
/// serve labelled namespaces).
const PROXY: &str = "egress";
const CLIENTS_NAMESPACE: &str = "node-clients";
/// The client pod, with every client and its runtime.
const CLIENTS_POD: &str = "clients";
const GATEWAY_SELECTOR: &str = "app.kubernetes.io/name=egress-gateway";

/// An HTTPS destination "on the internet" ([`OUTSIDE_ADDRESS`]) with a
/// certificate from a CA of its own: `from outside: <path>`, or 404 for a
/// path with `/missing`. It records the paths it was asked for.
mod destination {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use egress_e2e::test_tls::{serve_https, test_server_tls};
    use http_body_util::Full;
    use rcgen::SanType;

    use super::{OUTSIDE_ADDRESS, OUTSIDE_NAME};

    pub struct Destination {
        pub addr: SocketAddr,
        pub ca_pem: String,
        paths: Arc<Mutex<Vec<String>>>,
    }

    impl Destination {
        pub fn start() -> Destination {
            let name = SanType::DnsName(OUTSIDE_NAME.try_into().expect("name"));
            let tls = test_server_tls("outside CA", name);
            let listener = std::net::TcpListener::bind((OUTSIDE_ADDRESS, 0))
                .expect("bind the outside address");
            listener.set_nonblocking(true).expect("nonblocking");
            let addr = listener.local_addr().expect("addr");
            let paths = Arc::new(Mutex::new(Vec::new()));
            let seen = paths.clone();
            let config = tls.config.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    serve_https(listener, config, move |req| {
                        let path = req.uri().path().to_owned();
                        seen.lock().expect("lock").push(path.clone());
                        let mut response = hyper::Response::new(Full::new(Bytes::from(format!(
                            "from outside: {path}\n"
                        ))));
                        if path.contains("/missing") {
                            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                        }
                        async move { response }
                    })
                    .await;
                });
            });
            Destination {
                addr,
                ca_pem: tls.ca_pem,
                paths,
            }
        }

        /// `https://outside.e2e.test:<port><path>`.
        pub fn url(&self, path: &str) -> String {
            format!("https://{OUTSIDE_NAME}:{}{path}", self.addr.port())
        }

        pub fn seen(&self) -> Vec<String> {
            self.paths.lock().expect("lock").clone()
        }
    }
}

use destination::Destination;

/// What the installation leaves for the tests.
struct Installed {
    destination: Destination,
    /// Taken by each test for its whole run.
    turn: Mutex<()>,
}

/// `kubectl` as the admin, on the shared cluster.
fn admin(args: &[&str]) -> String {
    run(kubectl(Cluster::shared(), args))
}

/// The chart installed, the seed applied and served by ready gateway pods,
/// and a labelled namespace with the client pod; once per test binary. The
/// caller holds its turn until the guard drops.
fn installed() -> (&'static Installed, MutexGuard<'static, ()>) {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    let installed = INSTALLED.get_or_init(install);
    let turn = installed.turn.lock().unwrap_or_else(|e| e.into_inner());
    (installed, turn)
}

fn install() -> Installed {
    let cluster = Cluster::shared();
    // The chart's default images are the ones the node has.
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    for (key, image) in [("operator", images::OPERATOR), ("gateway", images::GATEWAY)] {
        let default = format!("{key}: {}", image.trim_start_matches("docker.io/library/"));
        assert!(
            values.contains(&default),
            "the chart's image.{key} is not {image}: the images are built as the chart names them"
        );
    }
    let started = Instant::now();
    let mut helm = cluster.plane.helm();
    helm.args(["install", RELEASE]).arg(chart_dir()).args([
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m0s",
    ]);
    let (code, output) = attempt(helm);
    assert_eq!(
        code,
        0,
        "helm install failed: {output}\n{}",
        attempt(kubectl(
            cluster,
            &["describe", "pods", "-n", RELEASE_NAMESPACE]
        ))
        .1
    );
    eprintln!(
        "FIGURE helm install --wait (two operator pods ready): {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // What the administrator brings: the interception CA (the example's
    // script), the CA of the internal destination, and the seed example
    // with this cluster's destination allowed.
    let destination = Destination::start();
    let dir = cluster.node.dir.join("installed");
    std::fs::create_dir_all(&dir).expect("dir");
    let kubectl_dir = cluster
        .plane
        .binaries
        .path("kubectl")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut ca = Command::new("bash");
    ca.arg(repository().join("examples/cluster/ca.sh"))
        .arg(dir.join("ca"))
        .arg(RELEASE_NAMESPACE)
        .env("KUBECONFIG", &cluster.plane.kubeconfig)
        .env(
            "PATH",
            format!(
                "{}:{}",
                kubectl_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    run(ca);
    apply(
        cluster,
        &serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "destination-ca", "namespace": RELEASE_NAMESPACE},
            "data": {"ca.crt": destination.ca_pem},
        })
        .to_string(),
    );
    let seed = std::fs::read_to_string(repository().join("examples/seed-policy.yaml"))
        .expect("seed")
        .replace(
            "  tlsInterception:\n",
            &format!(
                "  destinations:\n    allowPrivateCIDRs: [\"{OUTSIDE_ADDRESS}/32\"]\n    caBundleRef: {{name: destination-ca}}\n  tlsInterception:\n"
            ),
        );
    assert!(
        seed.contains("caBundleRef"),
        "the seed's EgressProxy changed shape"
    );
    let mut seeded = kubectl(cluster, &["apply", "-n", RELEASE_NAMESPACE, "-f", "-"]);
    seeded.stdin(Stdio::piped());
    let output = egress_e2e::run_with_stdin(seeded, seed.as_bytes()).expect("kubectl");
    assert!(
        output.status.success(),
        "{}",
        egress_e2e::combined_output(&output)
    );
    let (code, output) = attempt(kubectl(
        cluster,
        &[
            "wait",
            "-n",
            RELEASE_NAMESPACE,
            &format!("egressproxy/{PROXY}"),
            "--for=condition=Ready",
            "--timeout=240s",
        ],
    ));
    assert_eq!(
        code,
        0,
        "the seed's gateway never became ready: {output}\n{}\n{}",
        admin(&[
            "get",
            "egressproxy",
            PROXY,
            "-n",
            RELEASE_NAMESPACE,
            "-o",
            "yaml"
        ]),
        attempt(kubectl(
            cluster,
            &["describe", "pods", "-n", RELEASE_NAMESPACE]
        ))
        .1
    );

    namespace(cluster, CLIENTS_NAMESPACE);
    admin(&[
        "label",
        "namespace",
        CLIENTS_NAMESPACE,
        "egress.dev/injection=enabled",
    ]);
    client_pod(cluster, CLIENTS_POD);
    Installed {
        destination,
        turn: Mutex::new(()),
    }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A pod of the clients image that sleeps, with nothing of the proxy in its
/// spec: the webhook gives it all. Ready when this returns.
fn client_pod(cluster: &Cluster, name: &str) {
    apply(
        cluster,
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": CLIENTS_NAMESPACE, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "client", "image": images::CLIENTS, "imagePullPolicy": "Never",
                "command": ["sleep", "3600"]}]},
        })
        .to_string(),
    );
    let (code, output) = attempt(kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Ready",
            "--timeout=120s",
            "-n",
            CLIENTS_NAMESPACE,
            &format!("pod/{name}"),
        ],
    ));
    assert_eq!(
        code,
        0,
        "{output}\n{}",
        admin(&["describe", "pod", name, "-n", CLIENTS_NAMESPACE])
    );
}

/// The gateway pods' decision lines (their stdout), parsed.
fn decisions(cluster: &Cluster) -> Vec<serde_json::Value> {
    let (_, logs) = attempt(kubectl(
        cluster,
        &[
            "logs",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            GATEWAY_SELECTOR,
            "--tail=-1",
            "--max-log-requests=10",
        ],
    ));
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("final_action").is_some())
        .collect()
}

/// Each client users run, as the pod runs it: (name, command before the URLs).
const CLIENTS: [(&str, &[&str]); 5] = [
    (
        "curl",
        &[
            "sh",
            "-c",
            r#"for u in "$@"; do curl -s -o /dev/null -m 20 -w '%{http_code}\n' "$u"; done"#,
            "curl",
        ],
    ),
    (
        "python",
        &["/opt/venv/bin/python", "/opt/clients/env_client.py"],
    ),
    ("go", &["/opt/clients/goclient"]),
    (
        "node",
        &["/opt/node/bin/node", "/opt/clients/fetch_client.mjs"],
    ),
    (
        "java",
        &[
            "/opt/java/bin/java",
            "-cp",
            "/opt/clients",
            "HttpClientCheck",
        ],
    ),
];

#[test]
fn installed_with_the_chart_every_client_pod_sees_the_seed_s_three_phases() {
    let (installed, _turn) = installed();
    let cluster = Cluster::shared();
    let destination = &installed.destination;

    // Two operator pods, one of them leading; the webhook called through
    // its Service.
    let ready = admin(&[
        "get",
        "pods",
        "-n",
        RELEASE_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=egress-operator",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.containerStatuses[0].ready} {end}",
    ]);
    let operators: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(operators.len(), 2, "{ready}");
    assert!(operators.iter().all(|o| o.ends_with("=true")), "{ready}");
    let holder = lease_holder();
    assert!(
        operators
            .iter()
            .any(|o| o.starts_with(&format!("{holder}="))),
        "the lease is held by one of the operator pods: {holder} of {ready}"
    );
    assert_eq!(
        admin(&[
            "get",
            "mutatingwebhookconfiguration",
            RELEASE,
            "-o",
            "jsonpath={.webhooks[0].clientConfig.service.name} {.webhooks[0].clientConfig.url}",
        ])
        .trim(),
        format!("{RELEASE}-webhook"),
        "called through its Service, not by URL"
    );
    let gateways = admin(&[
        "get",
        "deployment",
        PROXY,
        "-n",
        RELEASE_NAMESPACE,
        "-o",
        "jsonpath={.status.readyReplicas}",
    ]);
    assert_eq!(gateways, "2", "the default of two gateway pods");

    // The client pod's settings came from the webhook.
    let pod: serde_json::Value = serde_json::from_str(&admin(&[
        "get",
        "pod",
        CLIENTS_POD,
        "-n",
        CLIENTS_NAMESPACE,
        "-o",
        "json",
    ]))
    .expect("pod JSON");
    let env: Vec<(String, String)> = pod["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let value = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        value("HTTPS_PROXY"),
        format!("http://{PROXY}.{RELEASE_NAMESPACE}.svc:1080"),
        "{env:?}"
    );
    assert_eq!(
        value("SSL_CERT_FILE"),
        "/etc/egress-proxy/ca-certificates.crt"
    );
    assert!(value("JAVA_TOOL_OPTIONS").contains("truststore.p12"));

    // Every client: an allowed request, and one stopped in each phase.
    for (name, command) in CLIENTS {
        let urls = [
            destination.url(&format!("/ok/{name}")),
            format!("https://{name}.example.org/"),
            destination.url(&format!("/files/{name}")),
            destination.url(&format!("/missing/{name}")),
        ];
        let mut args: Vec<&str> = command.to_vec();
        args.extend(urls.iter().map(String::as_str));
        let (_, output) = exec(cluster, CLIENTS_NAMESPACE, CLIENTS_POD, &args);
        let first = output.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("200"),
            "{name}: the allowed request through the interception: {output}"
        );
        let rest: Vec<&str> = output.lines().skip(1).collect();
        assert!(
            !rest.iter().any(|l| l.starts_with("200")),
            "{name}: nothing denied is served: {output}"
        );
    }

    // The decision lines name the pod, one per request and phase.
    let lines = eventually(Duration::from_secs(30), "every decision line", || {
        let lines = decisions(cluster);
        let count = CLIENTS
            .iter()
            .filter(|(name, _)| {
                lines.iter().any(|l| {
                    l["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(&format!("/missing/{name}")))
                })
            })
            .count();
        (count == CLIENTS.len()).then_some(lines)
    });
    for (name, _) in CLIENTS {
        let find = |what: &dyn Fn(&serde_json::Value) -> bool| {
            lines
                .iter()
                .find(|l| what(l))
                .unwrap_or_else(|| panic!("{name}: no such decision among {lines:#?}"))
                .clone()
        };
        let url_ends = |suffix: String| {
            move |l: &serde_json::Value| l["url"].as_str().is_some_and(|u| u.ends_with(&suffix))
        };
        let allowed = find(&url_ends(format!("/ok/{name}")));
        assert_eq!(
            (
                allowed["final_action"].as_str(),
                allowed["http_status_code"].as_i64()
            ),
            (Some("Allow"), Some(200)),
            "{allowed}"
        );
        assert_eq!(allowed["src_pod"], CLIENTS_POD, "{allowed}");
        assert_eq!(allowed["src_namespace"], CLIENTS_NAMESPACE, "{allowed}");
        let host = format!("{name}.example.org");
        let pre_dns = find(&|l: &serde_json::Value| l["dest_domain"] == host.as_str());
        assert_eq!(pre_dns["final_rule_name"], "deny-example-org", "{pre_dns}");
        assert_eq!(pre_dns["src_pod"], CLIENTS_POD, "{pre_dns}");
        let pre_request = find(&url_ends(format!("/files/{name}")));
        assert_eq!(
            pre_request["final_rule_name"], "deny-files",
            "{pre_request}"
        );
        let post_response = find(&url_ends(format!("/missing/{name}")));
        assert_eq!(
            (
                post_response["final_rule_name"].as_str(),
                post_response["http_status_code"].as_i64()
            ),
            (Some("deny-not-found"), Some(403)),
            "{post_response}"
        );
    }
    let seen = destination.seen();
    assert!(
        !seen.iter().any(|p| p.starts_with("/files/")),
        "a request denied before it is sent never reaches the destination: {seen:?}"
    );

    // Enforcement: a pod that unsets its proxy variables goes straight out
    // until the proxy enforces; then only through the proxy.
    let direct = [
        "env",
        "-u",
        "HTTPS_PROXY",
        "-u",
        "https_proxy",
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "5",
        "-k",
    ];
    let direct_url = destination.url("/direct");
    let direct_args: Vec<&str> = direct
        .iter()
        .copied()
        .chain([direct_url.as_str()])
        .collect();
    let (code, output) = exec(cluster, CLIENTS_NAMESPACE, CLIENTS_POD, &direct_args);
    assert_eq!((code, output.as_str()), (0, "200"), "direct before enforce");
    patch_proxy(r#"{"spec": {"clients": {"enforce": true}}}"#);
    let (code, output) = eventually(Duration::from_secs(60), "enforcement", || {
        let (code, output) = exec(cluster, CLIENTS_NAMESPACE, CLIENTS_POD, &direct_args);
        (code != 0).then_some((code, output))
    });
    assert!(
        [7, 28].contains(&code),
        "refused or dropped, not another failure ({code}): {output}"
    );
    let (code, output) = exec(
        cluster,
        CLIENTS_NAMESPACE,
        CLIENTS_POD,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "20",
            &destination.url("/through-the-proxy"),
        ],
    );
    assert_eq!((code, output.as_str()), (0, "200"), "the proxy still works");
    patch_proxy(r#"{"spec": {"clients": {"enforce": false}}}"#);
    eventually(Duration::from_secs(60), "enforcement lifted", || {
        (exec(cluster, CLIENTS_NAMESPACE, CLIENTS_POD, &direct_args).0 == 0).then_some(())
    });
}

/// A client in the client pod running for `seconds` in the background:
/// Python requests with keep-alive (one Session), or curl with a new
/// connection per request.
fn load(cluster: &Cluster, seconds: u32, url: &str, keep_alive: bool) -> std::process::Child {
    let script = format!(
        r#"end=$(( $(date +%s) + {seconds} )); ok=0; failed=0
while [ "$(date +%s)" -lt "$end" ]; do
  code=$(curl -s -o /dev/null -m 10 -w '%{{http_code}}' "{url}")
  if [ "$code" = 200 ]; then ok=$((ok+1)); else failed=$((failed+1)); echo "failed: $code"; fi
done
echo "{{\"ok\": $ok, \"failed\": $failed}}""#
    );
    let seconds = seconds.to_string();
    let command: Vec<&str> = if keep_alive {
        vec![
            "/opt/venv/bin/python",
            "/opt/clients/load_client.py",
            &seconds,
            url,
        ]
    } else {
        vec!["sh", "-c", &script]
    };
    let mut args = vec!["exec", "-n", CLIENTS_NAMESPACE, CLIENTS_POD, "--"];
    args.extend(command);
    kubectl(cluster, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec")
}

/// The last JSON line a load client printed: (ok, failed, everything).
fn load_result(child: std::process::Child) -> (u64, u64, String) {
    let output = child.wait_with_output().expect("load client");
    let text = egress_e2e::combined_output(&output);
    let summary: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary from the load client: {text}"));
    (
        summary["ok"].as_u64().unwrap_or(0),
        summary["failed"].as_u64().unwrap_or(u64::MAX),
        text,
    )
}

/// The operator pod that holds the chart's Lease.
fn lease_holder() -> String {
    admin(&[
        "get",
        "lease",
        &format!("{RELEASE}-operator"),
        "-n",
        RELEASE_NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

/// A merge patch of the seed's EgressProxy, as an admin would type it.
fn patch_proxy(patch: &str) {
    admin(&[
        "patch",
        "egressproxy",
        PROXY,
        "-n",
        RELEASE_NAMESPACE,
        "--type",
        "merge",
        "-p",
        patch,
    ]);
}

/// Kills the operator process of pod `pod` with SIGKILL, as a crash would
/// (the node's processes are this machine's: found by the pod name in their
/// environment).
fn crash(pod: &str) {
    let wanted = format!("POD_NAME={pod}");
    let pid = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            comm.trim() == "egress-operator"
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_bytes())
        })
        .unwrap_or_else(|| panic!("no operator process of pod {pod}"));
    run({
        let mut kill = Command::new("kill");
        kill.args(["-KILL", &pid.to_string()]);
        kill
    });
}

#[test]
fn an_upgrade_under_load_fails_no_request_and_a_crashed_leader_s_change_lands() {
    let (installed, _turn) = installed();
    let cluster = Cluster::shared();
    let url = installed.destination.url("/steady");
    let seconds = 150;
    let kept_alive = load(cluster, seconds, &url, true);
    let new_connections = load(cluster, seconds, &url, false);
    std::thread::sleep(Duration::from_secs(10));

    // An upgrade as users make one: `helm upgrade` to a new gateway image.
    // The operator's pods roll (one keeps leading, or hands over the Lease),
    // the leader renders the gateway with the new image, and its pods roll
    // one at a time.
    let rollout = Instant::now();
    let next = images::GATEWAY_NEXT.trim_start_matches("docker.io/library/");
    let mut upgrade = cluster.plane.helm();
    upgrade.args(["upgrade", RELEASE]).arg(chart_dir()).args([
        "--namespace",
        RELEASE_NAMESPACE,
        "--reuse-values",
        "--set",
        &format!("image.gateway={next}"),
        "--wait",
        "--timeout",
        "5m0s",
    ]);
    let (code, output) = attempt(upgrade);
    assert_eq!(code, 0, "helm upgrade: {output}");
    eventually(
        Duration::from_secs(120),
        "the gateway rendered with the new image",
        || {
            let image = admin(&[
                "get",
                "deployment",
                PROXY,
                "-n",
                RELEASE_NAMESPACE,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ]);
            (image == next).then_some(())
        },
    );
    admin(&[
        "rollout",
        "status",
        &format!("deployment/{PROXY}"),
        "-n",
        RELEASE_NAMESPACE,
        "--timeout=180s",
    ]);
    let rolled = rollout.elapsed();
    // The old pods drain (5 s unready but serving, then connections close).
    eventually(Duration::from_secs(90), "the old gateway pods gone", || {
        let pods = admin(&[
            "get",
            "pods",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            GATEWAY_SELECTOR,
            "-o",
            "name",
        ]);
        (pods.lines().count() == 2).then_some(())
    });
    let replaced = rollout.elapsed();

    // The leader crashes (SIGKILL: no chance to release its lease) and its
    // pod goes, and a rule is changed before any other replica leads: the
    // one that takes the lease once it expires applies the change.
    let holder = lease_holder();
    let changed = Instant::now();
    crash(&holder);
    admin(&[
        "delete",
        "pod",
        &holder,
        "-n",
        RELEASE_NAMESPACE,
        "--grace-period=0",
        "--force",
    ]);
    admin(&[
        "patch",
        "proxyrulegroup",
        "seed-rules",
        "-n",
        RELEASE_NAMESPACE,
        "--type",
        "json",
        "-p",
        r#"[{"op": "add", "path": "/spec/rules/preDNS/-", "value": {"name": "deny-failover", "action": "Deny", "conditions": [{"key": "request:DestinationDomain", "operator": "StringEquals", "values": ["failover.example.net"]}]}}]"#,
    ]);
    eventually(
        Duration::from_secs(90),
        "the change, applied by the new leader",
        || {
            // What the CONNECT got (kubectl adds the exit code on stderr).
            let (_, connect) = exec(
                cluster,
                CLIENTS_NAMESPACE,
                CLIENTS_POD,
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-m",
                    "10",
                    "-w",
                    "%{http_connect}",
                    "https://failover.example.net/",
                ],
            );
            connect.starts_with("403").then_some(())
        },
    );
    let applied = changed.elapsed();
    let new_holder = lease_holder();
    assert_ne!(new_holder, holder, "another replica leads");

    let (ok_alive, failed_alive, text_alive) = load_result(kept_alive);
    let (ok_new, failed_new, text_new) = load_result(new_connections);
    eprintln!(
        "FIGURE helm upgrade to a new gateway image under load (operator pods, then gateway pods, rolled): new gateway pods available after {:.1}s, old pods gone after {:.1}s",
        rolled.as_secs_f64(),
        replaced.as_secs_f64()
    );
    eprintln!(
        "FIGURE keep-alive client (Python requests, intercepted): {ok_alive} requests, {failed_alive} failed over {seconds}s"
    );
    eprintln!(
        "FIGURE new connection per request (curl, intercepted): {ok_new} requests, {failed_new} failed over {seconds}s"
    );
    eprintln!(
        "FIGURE leader killed, then a rule changed: enforced by the new leader after {:.1}s",
        applied.as_secs_f64()
    );
    assert!(ok_alive > 0 && ok_new > 0, "{text_alive}\n{text_new}");
    assert_eq!(failed_alive, 0, "keep-alive client: {text_alive}");
    assert_eq!(failed_new, 0, "new connections: {text_new}");
}
