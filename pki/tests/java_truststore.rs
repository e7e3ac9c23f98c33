//! The Java truststore with a real JVM: `KeyStore` reads it without a
//! password, every certificate is a trusted entry, and an HTTPS request to a
//! server whose certificate chains to one of them succeeds (and fails with a
//! truststore that lacks it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("egress-pki-java-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `openssl s_server` with `cert`/`key` on a free port, once it listens.
fn https_server(dir: &Path, cert: &str, key: &str) -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    std::fs::write(dir.join("server.crt"), cert).expect("write");
    std::fs::write(dir.join("server.key"), key).expect("write");
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(dir.join("server.crt"))
        .arg("-key")
        .arg(dir.join("server.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is needed for this test");
    let server = Server(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "openssl s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

fn java(truststore: &Path, url: &str) -> std::process::Output {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/TrustCheck.java");
    Command::new("java")
        .arg(format!(
            "-Djavax.net.ssl.trustStore={}",
            truststore.display()
        ))
        .arg("-Djavax.net.ssl.trustStoreType=PKCS12")
        .arg(source)
        .arg(truststore)
        .arg(url)
        .output()
        .expect("java (a JDK) is needed for this test")
}

#[test]
fn java_trusts_what_the_truststore_holds() {
    let dir = scratch();
    let now = SystemTime::now();
    let root = egress_pki::self_signed_ca("egress test root", &[], now, DAY).expect("root");
    let other = egress_pki::self_signed_ca("unrelated root", &[], now, DAY).expect("other");
    let leaf = egress_pki::issue_server_cert(
        &root.cert_pem,
        &root.key_pem,
        &["localhost".to_owned()],
        now,
        DAY,
    )
    .expect("leaf");
    let (_server, port) = https_server(&dir, &leaf.cert_pem, &leaf.key_pem);
    let url = format!("https://localhost:{port}/");

    let both = dir.join("both.p12");
    let bundle = format!("{}{}", other.cert_pem, root.cert_pem);
    std::fs::write(
        &both,
        egress_pki::java_truststore(&bundle, "egress").expect("p12"),
    )
    .expect("write");
    let output = java(&both, &url);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("trusted 2"), "{stdout}");
    assert!(stdout.contains("status 200"), "{stdout}");

    let without = dir.join("without.p12");
    std::fs::write(
        &without,
        egress_pki::java_truststore(&other.cert_pem, "egress").expect("p12"),
    )
    .expect("write");
    let output = java(&without, &url);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a root it lacks must not be trusted"
    );
    assert!(stderr.contains("PKIX path building failed"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
