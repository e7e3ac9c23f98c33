//! Test harness: a PKI, upstream servers, a fake DNS server, the gateway as a
//! real process, and real clients (curl, Python, Go).
#![allow(dead_code)]

pub mod clients;
pub mod dns;
pub mod process;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use egress_gateway::tls::authority::{CaFiles, InterceptCa, write_dev_ca};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The name the upstream answers for; intercepted unless said otherwise.
pub const HOST: &str = "www.example.com";
/// A name in the interception bypass list of [`policy`].
pub const BYPASS_HOST: &str = "pinned.example.net";
/// A name the seed policy denies in PreDNS.
pub const DENIED_HOST: &str = "www.example.org";

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "egress-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two independent trust chains, as in real life: the destinations' public
/// PKI (`upstream_root`) and the interception CA (`intercept_root` above the
/// sub-CA the gateway signs leaves with).
pub struct Pki {
    pub dir: TempDir,
    pub upstream_root: PathBuf,
    upstream_issuer: Issuer<'static, KeyPair>,
    pub intercept_root: PathBuf,
    pub intercept: CaFiles,
    /// Certificate of the gateway's HTTPS listener (localhost, 127.0.0.1), under `intercept_root`.
    pub proxy_cert: PathBuf,
    pub proxy_key: PathBuf,
    /// `upstream_root` and `intercept_root` in one file.
    pub both_roots: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        let (intercept, intercept_root) =
            write_dev_ca(&dir.0.join("intercept")).expect("interception CA");
        let ca = InterceptCa::load(&intercept).expect("sub-CA loads");
        let (chain, key) = ca
            .issue_pem(&["localhost", "127.0.0.1"])
            .expect("proxy cert");
        let proxy_cert = write(&dir.0, "proxy.pem", &chain);
        let proxy_key = write(&dir.0, "proxy.key", &key);

        let (mut params, root_key) = ca_params("Test Public Root");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&root_key).expect("root");
        let upstream_root = write(&dir.0, "upstream-root.pem", &root.pem());
        let both = format!(
            "{}{}",
            std::fs::read_to_string(&upstream_root).expect("read"),
            std::fs::read_to_string(&intercept_root).expect("read")
        );
        let both_roots = write(&dir.0, "both-roots.pem", &both);
        Pki {
            upstream_issuer: Issuer::new(params, root_key),
            upstream_root,
            intercept_root,
            intercept,
            proxy_cert,
            proxy_key,
            both_roots,
            dir,
        }
    }

    /// A certificate for `names` under the upstream root: (cert, key) PEM paths.
    pub fn server_cert(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        self.server_cert_from(&self.upstream_issuer, names)
    }

    /// A certificate for `names` from an issuer nobody trusts.
    pub fn untrusted_server_cert(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        let (params, key) = ca_params("Rogue Root");
        self.server_cert_from(&Issuer::new(params, key), names)
    }

    fn server_cert_from(
        &self,
        issuer: &Issuer<'static, KeyPair>,
        names: &[&str],
    ) -> (PathBuf, PathBuf) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().expect("dns name")))
            .collect();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, issuer).expect("server cert");
        (
            write(self.dir.path(), &format!("server-{n}.pem"), &cert.pem()),
            write(
                self.dir.path(),
                &format!("server-{n}.key"),
                &key.serialize_pem(),
            ),
        )
    }
}

/// The parameters of a CA certificate named `name`, and its new key.
fn ca_params(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params, key)
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// The seed policy with an `EgressProxy` for tests: loopback allowed (the test
/// upstreams live there), interception as given, [`BYPASS_HOST`] bypassed.
pub fn seed_policy(dir: &Path, intercept: bool) -> PathBuf {
    policy_with_proxy(dir, &seed_without_proxy(), intercept, &["127.0.0.1/32"])
}

/// The seed example's rule group and configuration, without its EgressProxy.
pub fn seed_without_proxy() -> String {
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-policy.yaml"
    ))
    .expect("seed example");
    seed.split("\n---\n")
        .filter(|doc| !doc.contains("kind: EgressProxy"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The ProxyRuleGroup `rule_group` (named `name`) and the ProxyConfiguration
/// `seed` that uses it and allows, in every phase, what it does not decide:
/// documents for [`policy_with_proxy`].
pub fn allowing_by_default(rule_group: &str, name: &str) -> String {
    format!(
        "{rule_group}---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {{name: seed}}\nspec:\n  ruleGroups: [{{name: {name}}}]\n  defaultActions: {{preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n"
    )
}

pub fn policy_with_proxy(
    dir: &Path,
    documents: &str,
    intercept: bool,
    allow_private: &[&str],
) -> PathBuf {
    let allow: Vec<String> = allow_private.iter().map(|c| format!("\"{c}\"")).collect();
    let yaml = format!(
        "{documents}\n---\napiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata:\n  name: test-proxy\nspec:\n  configurationRef:\n    name: seed\n  tlsInterception:\n    enabled: {intercept}\n    bypassDomains: [\"{BYPASS_HOST}\"]\n  destinations:\n    allowPrivateCIDRs: [{}]\n",
        allow.join(", ")
    );
    write(dir, "policy.yaml", &yaml)
}

/// Gives the EgressProxy at the end of the policy file `policy` (as
/// [`policy_with_proxy`] writes it) the `logging` settings `settings`, a YAML
/// flow mapping.
pub fn add_logging(policy: &Path, settings: &str) {
    let text = std::fs::read_to_string(policy).expect("read");
    std::fs::write(policy, format!("{text}  logging: {settings}\n")).expect("write");
}

/// Fails when one of `values` is in one of the `(where, text)` places.
pub fn assert_nowhere(values: &[&str], places: &[(&str, String)]) {
    for (place, text) in places {
        for value in values {
            assert!(
                !text.contains(value),
                "a secret value is in the {place}:\n{text}"
            );
        }
    }
}

/// Reads `stream` until the peer closes it or a read fails (as one does at
/// the stream's read timeout); what arrives is dropped.
pub fn read_until_closed(stream: &mut impl std::io::Read) {
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
