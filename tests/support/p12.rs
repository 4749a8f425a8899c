//! PKCS#12 bundles for the tests: made with `p12-keystore`'s writer
//! (modern AES-256, or the legacy 3DES and 40-bit RC2 a macOS Keychain
//! export uses), or with the `openssl` command when it is installed.

use std::io::Write;
use std::process::{Command, Stdio};

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKeyChain,
};

use super::pki::Leaf;

/// How the bundle is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// PBES2, PBKDF2, AES-256-CBC, HMAC-SHA256 (OpenSSL 3's default).
    Modern,
    /// pbeWithSHAAnd3-KeyTripleDES-CBC, HMAC-SHA1.
    Legacy3Des,
    /// pbeWithSHAAnd40BitRC2-CBC, HMAC-SHA1.
    LegacyRc2,
}

/// `leaf` and its key as a PKCS#12 bundle opened by `password`.
pub fn bundle(leaf: &Leaf, password: &str, enc: Encryption) -> Vec<u8> {
    let cert = Certificate::from_der(&leaf.cert_der()).expect("cert DER");
    let chain = PrivateKeyChain::new(leaf.key_der(), [1u8; 20], [cert]);
    let mut store = KeyStore::new();
    store.add_entry("client", KeyStoreEntry::PrivateKeyChain(chain));
    let (alg, mac) = match enc {
        Encryption::Modern => (
            EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            MacAlgorithm::HmacSha256,
        ),
        Encryption::Legacy3Des => (
            EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
            MacAlgorithm::HmacSha1,
        ),
        Encryption::LegacyRc2 => (
            EncryptionAlgorithm::PbeWithShaAnd40BitRc4Cbc,
            MacAlgorithm::HmacSha1,
        ),
    };
    store
        .writer(password)
        .encryption_algorithm(alg)
        .mac_algorithm(mac)
        .write()
        .expect("write PKCS#12")
}

/// A bundle holding only the certificate, no key.
pub fn certificate_only(leaf: &Leaf, password: &str) -> Vec<u8> {
    let mut store = KeyStore::new();
    store.add_entry(
        "ca",
        KeyStoreEntry::Certificate(Certificate::from_der(&leaf.cert_der()).expect("cert DER")),
    );
    store.writer(password).write().expect("write PKCS#12")
}

/// The `openssl` command, or `None` (with a note) when it is not installed;
/// `EGRESS_REQUIRE_OPENSSL=1` makes its absence a failure.
pub fn openssl() -> Option<&'static str> {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("openssl");
    }
    assert_ne!(
        std::env::var("EGRESS_REQUIRE_OPENSSL").as_deref(),
        Ok("1"),
        "EGRESS_REQUIRE_OPENSSL=1 but the openssl command is missing"
    );
    eprintln!("SKIPPED: the openssl command is not installed");
    None
}

/// `openssl pkcs12 -export` of `leaf` with `password` and extra arguments
/// (e.g. `-legacy`); `None` when openssl is missing or refuses.
pub fn openssl_bundle(leaf: &Leaf, password: &str, extra: &[&str]) -> Option<Vec<u8>> {
    let bin = openssl()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("c.pem");
    let key = dir.path().join("k.pem");
    let out = dir.path().join("out.p12");
    std::fs::write(&cert, &leaf.cert_pem).expect("write");
    std::fs::write(&key, &leaf.key_pem).expect("write");
    let mut child = Command::new(bin)
        .args(["pkcs12", "-export", "-in"])
        .arg(&cert)
        .arg("-inkey")
        .arg(&key)
        .arg("-out")
        .arg(&out)
        .args(["-passout", "stdin"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password to openssl");
    let done = child.wait_with_output().expect("openssl");
    if !done.status.success() {
        eprintln!(
            "openssl pkcs12 {extra:?} refused: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        return None;
    }
    Some(std::fs::read(&out).expect("read the bundle"))
}
