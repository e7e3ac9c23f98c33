//! Parents made with the real `openssl` CLI the way users make them, and the
//! sub-CAs and serving certificates issued from them checked by
//! `openssl verify`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use egress_pki::{Error, Parent, certificates, issue_server_cert};

const DAY: Duration = Duration::from_secs(86_400);

// Extensions of the certificates signed with `openssl x509 -req -extfile`,
// one profile each; every one also gets `KEY_IDENTIFIERS`.

/// An intermediate that may have one CA below it.
const INT_PATHLEN1: &str = "\
basicConstraints=critical,CA:TRUE,pathlen:1
keyUsage=critical,keyCertSign,cRLSign
";

/// An intermediate with name constraints and no path length.
const INT_CONSTRAINED: &str = "\
basicConstraints=critical,CA:TRUE
keyUsage=critical,digitalSignature,keyCertSign,cRLSign
nameConstraints=critical,permitted;DNS:example.com,permitted;IP:10.0.0.0/255.0.0.0,excluded;DNS:secret.example.com
";

/// An intermediate that may have no CA below it.
const INT_PATHLEN0: &str = "\
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
";

/// A serving certificate.
const LEAF: &str = "\
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:www.example.com
";

/// The key identifiers every certificate signed here carries.
const KEY_IDENTIFIERS: &str = "\
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid:always
";

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("egress-pki-openssl-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path(name), contents).expect("write scratch file");
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read scratch file")
    }

    /// Runs openssl in the directory; returns (success, stdout + stderr).
    fn try_openssl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.0)
            .output()
            .expect("the openssl CLI must be installed for this test");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn openssl(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_openssl(args);
        assert!(ok, "openssl {args:?} failed:\n{text}");
        text
    }

    /// A P-256 key in SEC1 form at `out`.
    fn ec_key(&self, out: &str) {
        self.openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            out,
        ]);
    }

    /// A certificate for `key` signed by `ca` with the `extensions` of one
    /// profile and the key identifiers.
    fn sign_csr(
        &self,
        name: &str,
        key: &str,
        subject: &str,
        ca: &str,
        extensions: &str,
        serial: &str,
    ) {
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let extfile = format!("{name}.cnf");
        self.write(&extfile, &format!("{extensions}{KEY_IDENTIFIERS}"));
        self.openssl(&["req", "-new", "-key", key, "-subj", subject, "-out", &csr]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            serial,
            "-days",
            "200",
            "-sha256",
            // Without `-extensions`, the file's unnamed section is used.
            "-extfile",
            &extfile,
            "-out",
            &pem,
        ]);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn first_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Issues a sub-CA from `parent` and a serving certificate from the sub-CA,
/// and has openssl verify both against `root.pem`.
fn issue_and_verify(dir: &Scratch, label: &str, parent: &Parent, names: &[&str]) {
    let now = SystemTime::now();
    let sub = parent
        .issue_sub_ca("egress-proxy interception", now, 30 * DAY)
        .expect("sub-CA");
    assert!(sub.not_after <= parent.not_after());

    // The sub-CA names its parent exactly as the parent names itself.
    let sub_der = certificates(&sub.cert_pem).expect("sub pem").remove(0);
    let (_, sub_x509) = x509_parser::parse_x509_certificate(&sub_der).expect("sub x509");
    let (_, parent_x509) =
        x509_parser::parse_x509_certificate(parent.certificate()).expect("parent x509");
    assert_eq!(sub_x509.issuer().as_raw(), parent_x509.subject().as_raw());

    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = issue_server_cert(&sub.cert_pem, &sub.key_pem, &names, now, 7 * DAY)
        .expect("serving certificate");

    let untrusted = format!("{label}-untrusted.pem");
    let sub_pem = format!("{label}-subca.pem");
    let leaf_pem = format!("{label}-leaf.pem");
    dir.write(&untrusted, &format!("{}{}", sub.cert_pem, sub.chain_pem));
    dir.write(&sub_pem, &sub.cert_pem);
    dir.write(&leaf_pem, &leaf.cert_pem);

    let out = dir.openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        "root.pem",
        "-untrusted",
        &untrusted,
        &sub_pem,
    ]);
    assert!(out.contains(": OK"), "{out}");
    let out = dir.openssl(&[
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-CAfile",
        "root.pem",
        "-untrusted",
        &untrusted,
        &leaf_pem,
    ]);
    assert!(out.contains(&format!("{leaf_pem}: OK")), "{out}");
    // The key openssl reads is the certificate's.
    let key_file = format!("{label}-leaf.key");
    dir.write(&key_file, &leaf.key_pem);
    let from_key = dir.openssl(&["pkey", "-in", &key_file, "-pubout"]);
    let from_cert = dir.openssl(&["x509", "-in", &leaf_pem, "-noout", "-pubkey"]);
    assert_eq!(from_key, from_cert);
}

#[test]
fn parents_made_with_openssl() {
    let dir = Scratch::new();

    // Root: RSA, PKCS#8 key, no path length.
    dir.openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "root.key",
    ]);
    dir.openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "root.key",
        "-sha256",
        "-days",
        "365",
        "-subj",
        "/O=Example Corp/CN=Example Root CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "root.pem",
    ]);
    let root_pem = dir.read("root.pem");
    // A parent as the proxy loads it now: tls.crt, the key, and the root as ca.crt.
    let load = |tls_crt: &str, key_file: &str| {
        Parent::load(
            tls_crt,
            &dir.read(key_file),
            Some(&root_pem),
            SystemTime::now(),
        )
    };

    // RSA intermediate, pathlen:1, PKCS#1 key, a subject with two DCs.
    dir.openssl(&["genrsa", "-traditional", "-out", "rsa-int.key", "2048"]);
    assert_eq!(
        first_line(&dir.path("rsa-int.key")),
        "-----BEGIN RSA PRIVATE KEY-----"
    );
    dir.sign_csr(
        "rsa-int",
        "rsa-int.key",
        "/DC=com/DC=example/O=Example Corp/CN=Example Issuing CA",
        "root",
        INT_PATHLEN1,
        "1001",
    );
    let parent = load(&dir.read("rsa-int.pem"), "rsa-int.key")
        .expect("RSA intermediate with pathlen:1 is a good parent");
    assert_eq!(
        parent.subject(),
        "DC=com, DC=example, O=Example Corp, CN=Example Issuing CA"
    );
    assert_eq!(parent.chain().len(), 1);
    issue_and_verify(&dir, "rsa", &parent, &["api.example.com", "10.1.2.3"]);

    // The same key converted with `openssl rsa -traditional` from PKCS#8.
    dir.openssl(&["pkey", "-in", "rsa-int.key", "-out", "rsa-int.pkcs8.key"]);
    dir.openssl(&[
        "rsa",
        "-in",
        "rsa-int.pkcs8.key",
        "-traditional",
        "-out",
        "rsa-int.pkcs1.key",
    ]);
    assert_eq!(
        first_line(&dir.path("rsa-int.pkcs8.key")),
        "-----BEGIN PRIVATE KEY-----"
    );
    for key in ["rsa-int.pkcs8.key", "rsa-int.pkcs1.key"] {
        Parent::load(
            &dir.read("rsa-int.pem"),
            &dir.read(key),
            None,
            SystemTime::now(),
        )
        .expect(key);
    }

    // ECDSA P-256 intermediate with a SEC1 key and name constraints; its
    // chain in tls.crt and the root again in ca.crt.
    dir.ec_key("ec-int.key");
    assert_eq!(
        first_line(&dir.path("ec-int.key")),
        "-----BEGIN EC PRIVATE KEY-----"
    );
    dir.sign_csr(
        "ec-int",
        "ec-int.key",
        "/O=Example Corp/CN=Example EC Issuing CA",
        "root",
        INT_CONSTRAINED,
        "1002",
    );
    let tls_crt = format!("{}{}", dir.read("ec-int.pem"), root_pem);
    let parent = load(&tls_crt, "ec-int.key").expect("EC intermediate is a good parent");
    assert_eq!(
        parent.chain().len(),
        1,
        "ca.crt repeats the root of tls.crt"
    );
    issue_and_verify(&dir, "ec", &parent, &["api.example.com", "10.9.8.7"]);
    let text = dir.openssl(&["x509", "-in", "ec-subca.pem", "-noout", "-text"]);
    assert!(text.contains("Name Constraints: critical"), "{text}");
    assert!(text.contains("DNS:secret.example.com"), "{text}");
    assert!(text.contains("pathlen:0"), "{text}");
    // The copied constraints hold: a name outside them does not verify.
    let now = SystemTime::now();
    let sub = parent.issue_sub_ca("outside", now, DAY).expect("sub-CA");
    let outside = issue_server_cert(
        &sub.cert_pem,
        &sub.key_pem,
        &["www.example.org".to_owned()],
        now,
        DAY,
    )
    .expect("leaf");
    dir.write(
        "outside-untrusted.pem",
        &format!("{}{}", sub.cert_pem, sub.chain_pem),
    );
    dir.write("outside-leaf.pem", &outside.cert_pem);
    let (ok, out) = dir.try_openssl(&[
        "verify",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "outside-untrusted.pem",
        "outside-leaf.pem",
    ]);
    assert!(!ok, "a name outside the constraints must not verify: {out}");
    assert!(
        out.contains("name constraint") || out.contains("subtree"),
        "{out}"
    );

    // The root itself as the parent (PKCS#8 key, ca.crt is the same root).
    let parent = load(&root_pem, "root.key").expect("root is a good parent");
    assert!(parent.chain().is_empty());
    issue_and_verify(&dir, "root", &parent, &["svc.example.com"]);

    // A pathlen:0 intermediate (refused, with the fix) and an end-entity
    // certificate as the parent.
    for (name, subject, extensions, serial, reason) in [
        (
            "zero",
            "/CN=Path Zero CA",
            INT_PATHLEN0,
            "1003",
            "ParentPathLenZero",
        ),
        ("leaf", "/CN=www.example.com", LEAF, "1004", "ParentNotCA"),
    ] {
        let key = format!("{name}.key");
        dir.ec_key(&key);
        dir.sign_csr(name, &key, subject, "root", extensions, serial);
        let err = load(&dir.read(&format!("{name}.pem")), &key).expect_err(reason);
        assert_eq!(err.reason(), reason);
        if let Error::ParentPathLenZero { limited_by, .. } = &err {
            assert!(limited_by.is_none(), "{err:?}");
            assert!(err.to_string().contains("pathlen:1"), "{err}");
        }
    }

    // The right certificate with the wrong key.
    let err = Parent::load(
        &dir.read("rsa-int.pem"),
        &dir.read("ec-int.key"),
        None,
        SystemTime::now(),
    )
    .expect_err("mismatched key");
    assert_eq!(err.reason(), "ParentKeyMismatch");
}
