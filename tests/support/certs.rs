//! Certificates made with openssl for the TLS tests: CAs, and certificates
//! for 127.0.0.1 and localhost that serve both as server and as client
//! certificates.

use std::path::Path;
use std::process::Command;

/// Runs openssl with `args` in `dir`, failing the test with its output if it
/// fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run openssl (scripts/test installs it): {error}"));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A self-signed CA in `dir`: `{name}.pem` and `{name}.key`.
pub fn make_ca(dir: &Path, name: &str) {
    let subject = format!("/CN=trimatch test CA {name}");
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &subject,
            "-keyout", &key, "-out", &pem,
        ],
    );
}

/// A certificate for 127.0.0.1 and localhost signed by the CA `ca` in `dir`:
/// `{name}.pem` and `{name}.key`.
pub fn make_cert(dir: &Path, ca: &str, name: &str) {
    let (key, pem, csr) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("{name}.csr"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    .unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
            "-out",
            &pem,
        ],
    );
}
