//! TLS interception: the chain clients get, the sub-CA's limits, minting once
//! per name, sessions resumed, WebSocket, and sub-CA reloads.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::clients::{curl, python_script};
use common::process::Gateway;
use common::upstream::Upstream;
use common::{HOST, Pki, TempDir, eventually, seed_policy, write};

fn openssl(args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn pem_blocks(text: &str) -> Vec<String> {
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|rest| rest.split_once("-----END CERTIFICATE-----"))
        .map(|(body, _)| format!("-----BEGIN CERTIFICATE-----{body}-----END CERTIFICATE-----\n"))
        .collect()
}

/// `openssl verify` of `leaf` against `root` with the `untrusted`
/// intermediates and `options`: (verified, what it printed).
fn verify(root: &Path, untrusted: &Path, leaf: &Path, options: &[&str]) -> (bool, String) {
    let (root, untrusted, leaf) = (
        root.display().to_string(),
        untrusted.display().to_string(),
        leaf.display().to_string(),
    );
    let mut args = vec!["verify", "-CAfile", &root, "-untrusted", &untrusted];
    args.extend(options);
    args.push(&leaf);
    openssl(&args)
}

/// Writes `files` (name, text) into `dir`, then runs openssl commands, each
/// written as one line; `{d}` stands for `dir`.
fn openssl_steps(dir: &Path, files: &[(&str, &str)], steps: &[&str]) {
    for (name, text) in files {
        write(dir, name, text);
    }
    for step in steps {
        let line = step.replace("{d}", &dir.display().to_string());
        let args: Vec<&str> = line.split_whitespace().collect();
        let (ok, text) = openssl(&args);
        assert!(ok, "openssl {line}: {text}");
    }
}

/// The chain the gateway presents for `HOST:port`, via `openssl s_client -proxy`.
fn presented_chain(gateway: &Gateway, port: u16, dir: &Path) -> (PathBuf, PathBuf, usize) {
    let (_, text) = openssl(&[
        "s_client",
        "-proxy",
        &gateway.http.to_string(),
        "-connect",
        &format!("{HOST}:{port}"),
        "-servername",
        HOST,
        "-showcerts",
    ]);
    let blocks = pem_blocks(&text);
    assert!(blocks.len() >= 2, "leaf and sub-CA expected:\n{text}");
    let leaf = write(dir, "leaf.pem", &blocks[0]);
    let rest = write(dir, "intermediates.pem", &blocks[1..].concat());
    (leaf, rest, blocks.len())
}

/// A PKI, a directory, and an HTTPS upstream for HOST with a certificate
/// under the PKI's public root.
struct Setup {
    pki: Pki,
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    upstream: Upstream,
}

fn setup(tag: &str) -> Setup {
    let pki = Pki::new();
    let dir = TempDir::new(tag);
    let (cert, key) = pki.server_cert(&[HOST]);
    let upstream = Upstream::https(&cert, &key);
    Setup {
        pki,
        dir,
        cert,
        key,
        upstream,
    }
}

impl Setup {
    /// The gateway on the seed policy, intercepting, with `extra` flags.
    fn gateway(&self, extra: &[&str]) -> Gateway {
        Gateway::start(&self.pki, &seed_policy(self.dir.path(), true), extra)
    }

    /// The upstream's `/` by HOST.
    fn url(&self) -> String {
        format!("https://{HOST}:{}/", self.upstream.addr.port())
    }
}

#[test]
fn the_chain_verifies_with_openssl_and_the_sub_ca_cannot_issue_a_ca() {
    let s = setup("chain");
    let (pki, d) = (&s.pki, s.dir.path());
    let gateway = s.gateway(&[]);
    let (leaf, intermediates, count) = presented_chain(&gateway, s.upstream.addr.port(), d);
    assert_eq!(count, 3, "leaf, sub-CA and the chain above it");
    let (ok, text) = verify(
        &pki.intercept_root,
        &intermediates,
        &leaf,
        &["-purpose", "sslserver", "-verify_hostname", HOST],
    );
    assert!(ok && text.contains(": OK"), "{text}");

    let (_, leaf_text) = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        &leaf.display().to_string(),
    ]);
    assert!(leaf_text.contains(&format!("DNS:{HOST}")), "{leaf_text}");
    assert!(
        leaf_text.contains("TLS Web Server Authentication"),
        "{leaf_text}"
    );
    assert!(leaf_text.contains("CA:FALSE"), "{leaf_text}");
    let sub_ca = pki.intercept.cert.display().to_string();
    let (_, sub_text) = openssl(&["x509", "-noout", "-text", "-in", &sub_ca]);
    assert!(sub_text.contains("CA:TRUE, pathlen:0"), "{sub_text}");

    // A CA certificate signed with the sub-CA's key does not verify: path length 0.
    let sub_key = pki.intercept.key.display().to_string();
    openssl_steps(
        d,
        &[
            (
                "ca.ext",
                "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
            ),
            (
                "leaf.ext",
                &format!("subjectAltName=DNS:{HOST}\nextendedKeyUsage=serverAuth\n"),
            ),
        ],
        &[
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/rogue.key -subj /CN=rogue-CA -out {d}/rogue.csr",
            &format!(
                "x509 -req -in {{d}}/rogue.csr -CA {sub_ca} -CAkey {sub_key} -CAcreateserial -extfile {{d}}/ca.ext -days 1 -out {{d}}/rogue.pem"
            ),
            &format!(
                "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {{d}}/victim.key -subj /CN={HOST} -out {{d}}/victim.csr"
            ),
            "x509 -req -in {d}/victim.csr -CA {d}/rogue.pem -CAkey {d}/rogue.key -CAcreateserial -extfile {d}/leaf.ext -days 1 -out {d}/victim.pem",
        ],
    );
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(d.join("rogue.pem")).expect("read"),
        std::fs::read_to_string(&pki.intercept.cert).expect("read")
    );
    let untrusted = write(d, "rogue-chain.pem", &chain);
    let (ok, text) = verify(&pki.intercept_root, &untrusted, &d.join("victim.pem"), &[]);
    assert!(
        !ok && text.contains("path length constraint exceeded"),
        "{text}"
    );
}

#[test]
fn an_openssl_sub_ca_with_a_pkcs1_rsa_key_mints_leaves() {
    let s = setup("rsa");
    let d = s.dir.path();
    let p = |name: &str| d.join(name).display().to_string();
    openssl_steps(
        d,
        &[(
            "sub.ext",
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )],
        &[
            "req -x509 -newkey rsa:2048 -nodes -keyout {d}/root.key -subj /CN=RSA-Root -days 2 -addext basicConstraints=critical,CA:TRUE,pathlen:1 -addext keyUsage=critical,keyCertSign,cRLSign -out {d}/root.pem",
            "genrsa -traditional -out {d}/sub.key 2048",
            "req -new -key {d}/sub.key -subj /CN=RSA-Sub-CA -out {d}/sub.csr",
            "x509 -req -in {d}/sub.csr -CA {d}/root.pem -CAkey {d}/root.key -CAcreateserial -extfile {d}/sub.ext -days 1 -out {d}/sub.pem",
        ],
    );
    assert!(
        std::fs::read_to_string(d.join("sub.key"))
            .expect("key")
            .contains("BEGIN RSA PRIVATE KEY"),
        "PKCS#1"
    );
    let gateway = s.gateway(&[
        "--intercept-ca-cert",
        &p("sub.pem"),
        "--intercept-ca-key",
        &p("sub.key"),
        "--intercept-ca-chain",
        &p("root.pem"),
    ]);
    let result = curl(&[
        "--proxy",
        &gateway.http_proxy(),
        "--cacert",
        &p("root.pem"),
        &s.url(),
    ]);
    assert_eq!(result.status, 200, "{result:?}");
}

#[test]
fn leaves_are_minted_once_per_name_under_concurrency() {
    let s = setup("single-flight");
    let gateway = s.gateway(&[]);
    let url = s.url();
    let root = s.pki.intercept_root.display().to_string();
    let proxy = gateway.http_proxy();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| curl(&["--proxy", &proxy, "--cacert", &root, &url])))
            .collect();
        for handle in handles {
            let result = handle.join().expect("thread");
            assert_eq!(result.status, 200, "{result:?}");
        }
    });
    assert_eq!(gateway.metric("egress_certificate_cache_misses_total"), 1.0);
    assert_eq!(gateway.metric("egress_certificate_cache_hits_total"), 15.0);
    assert_eq!(gateway.metric("egress_certificate_cache_size"), 1.0);
    assert!(gateway.metric("egress_certificate_mint_duration_seconds_count") >= 1.0);
}

#[test]
fn a_client_resumes_its_session_after_more_clients_than_a_session_table_holds() {
    let s = setup("resume");
    let gateway = s.gateway(&[]);
    // rustls keeps 256 sessions in its table; tickets the gateway encrypts
    // keep none, so the first session still resumes after 300 others.
    let output = python_script(
        "resuming_tls_client.py",
        &[
            &gateway.http.to_string(),
            &format!("{HOST}:{}", s.upstream.addr.port()),
            &s.pki.intercept_root.display().to_string(),
            "300",
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        text.trim(),
        "first reused=True",
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn websocket_upgrades_pass_through_intercepted_connections() {
    let pki = Pki::new();
    let dir = TempDir::new("ws");
    let (cert, key) = pki.server_cert(&[HOST]);
    let gateway = Gateway::start(&pki, &seed_policy(dir.path(), true), &[]);
    let output = python_script(
        "websocket_echo.py",
        &[
            &gateway.http_proxy(),
            &pki.intercept_root.display().to_string(),
            &cert.display().to_string(),
            &key.display().to_string(),
            HOST,
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("echo ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let port: u16 = stdout
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let line = gateway.decision(|d| d["http_status_code"] == 101);
    assert_eq!(line["url"], format!("https://{HOST}:{port}/"));
    assert!(line["request_size"].as_u64() > Some(70_000), "{line}");
    assert!(line["response_size"].as_u64() > Some(70_000), "{line}");
}

#[test]
fn a_new_sub_ca_is_picked_up_and_a_bad_one_is_refused() {
    let s = setup("reload-ca");
    let pki = &s.pki;
    // The gateway reads copies, so the test can replace them.
    let live = s.dir.path().join("live");
    std::fs::create_dir_all(&live).expect("dir");
    let copy = |from: &Path, name: &str| {
        let to = live.join(name);
        std::fs::copy(from, &to).expect("copy");
        to.display().to_string()
    };
    let (cert_path, key_path) = (
        copy(&pki.intercept.cert, "ca.pem"),
        copy(&pki.intercept.key, "ca.key"),
    );
    let chain_path = copy(pki.intercept.chain.as_ref().expect("chain"), "chain.pem");
    let gateway = s.gateway(&[
        "--intercept-ca-cert",
        &cert_path,
        "--intercept-ca-key",
        &key_path,
        "--intercept-ca-chain",
        &chain_path,
    ]);
    let url = s.url();
    let status_trusting =
        |root: &str| curl(&["--proxy", &gateway.http_proxy(), "--cacert", root, &url]).status;
    let old_root = pki.intercept_root.display().to_string();
    assert_eq!(status_trusting(&old_root), 200);

    // A certificate that is not a CA: refused, the old sub-CA keeps serving.
    std::fs::copy(&s.cert, &cert_path).expect("copy");
    std::fs::copy(&s.key, &key_path).expect("copy");
    gateway.wait_metric("egress_tls_reload_failures_total", 1.0);
    gateway.diagnostic(&["is not a CA certificate"]);
    assert_eq!(status_trusting(&old_root), 200);

    // A new sub-CA under a new root: new leaves chain to it.
    let fresh = TempDir::new("fresh-ca");
    let (files, new_root) =
        egress_gateway::tls::authority::write_dev_ca(fresh.path()).expect("new CA");
    std::fs::copy(files.chain.as_ref().expect("chain"), &chain_path).expect("copy");
    std::fs::copy(&files.key, &key_path).expect("copy");
    std::fs::copy(&files.cert, &cert_path).expect("copy");
    let new_root = new_root.display().to_string();
    let switched = eventually(Duration::from_secs(5), || {
        (status_trusting(&new_root) == 200).then_some(())
    });
    assert!(switched.is_some(), "{:?}", gateway.diagnostics());
    assert_eq!(status_trusting(&old_root), 0);
}

#[test]
fn interception_without_a_sub_ca_fails_closed_and_a_bad_sub_ca_stops_startup() {
    let pki = Pki::new();
    let dir = TempDir::new("no-ca");
    let policy = seed_policy(dir.path(), true).display().to_string();
    // Policy and listeners, no --intercept-ca-cert.
    let run_without_ca = [
        "run",
        "--policy",
        &policy,
        "--http-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let mut args: Vec<String> = ["--log-format", "json"]
        .into_iter()
        .chain(run_without_ca)
        .map(str::to_owned)
        .collect();
    args.extend(["--resolve".to_owned(), format!("{HOST}:*:127.0.0.1")]);
    let gateway = Gateway::spawn(&args);
    let result = curl(&[
        "--proxy",
        &gateway.http_proxy(),
        "-k",
        &format!("https://{HOST}:9/"),
    ]);
    assert!(
        result
            .stderr
            .contains("CONNECT tunnel failed, response 502"),
        "{result:?}"
    );
    let line = gateway.decision(|d| d["error"].as_str().is_some());
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no_intercept_ca")),
        "{line}"
    );
    gateway.diagnostic(&["no --intercept-ca-cert"]);

    // A leaf certificate given as the sub-CA: the process refuses to start.
    let (leaf, leaf_key) = pki.server_cert(&[HOST]);
    let output = Command::new(env!("CARGO_BIN_EXE_egress-gateway"))
        .args(run_without_ca)
        .args([
            "--intercept-ca-cert",
            &leaf.display().to_string(),
            "--intercept-ca-key",
            &leaf_key.display().to_string(),
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the interception sub-CA cannot be used")
            && stderr.contains("is not a CA certificate"),
        "{stderr}"
    );
}
