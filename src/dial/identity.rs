//! Client identities for mutual TLS (the APNs push certificate): a PEM
//! chain with its PEM key (or both in one PEM file), or a PKCS#12 bundle
//! (`.p12`, `.pfx`) opened with the password in `client_cert_password_file`.
//!
//! Owns reading those files and saying precisely why one cannot be used,
//! with a closed [`CertReadReason`] for the `egress_cert_read_errors_total`
//! label. A bad file is an error value, never a panic, and never a reason to
//! refuse the whole configuration: the sidecar keeps probing (the probe then
//! shows what the upstream thinks of a missing certificate) and says why.
//! Messages name files, never their content, and never the password.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;

use super::tls::CertInfo;
use crate::secret::Secret;

/// The most bytes read from a certificate, key or password file.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// How to re-export a PKCS#12 file this build cannot read.
const REEXPORT: &str = "re-export it with modern defaults: `openssl pkcs12 -in old.p12 -nodes -legacy | openssl pkcs12 -export -out new.p12` (OpenSSL 3; drop -legacy with OpenSSL 1.1), then put the new password in client_cert_password_file";

/// The files an identity is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// `client_cert`: PEM certificates (optionally with the key), or PKCS#12.
    pub cert: PathBuf,
    /// `client_key`: the PEM private key, when it is not in `cert`.
    pub key: Option<PathBuf>,
    /// `client_cert_password_file`: the PKCS#12 password (one line).
    pub password: Option<PathBuf>,
}

impl IdentityFiles {
    /// Every file the identity depends on: a change to any of them calls
    /// for reading the identity again.
    pub fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path()];
        v.extend(self.key.as_deref());
        v.extend(self.password.as_deref());
        v
    }
}

/// The container an identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityFormat {
    /// PEM certificate chain and PEM key.
    Pem,
    /// A PKCS#12 bundle.
    Pkcs12,
}

/// A client certificate chain and its key, ready for rustls.
pub struct ClientIdentity {
    /// The chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key. Never printed.
    pub key: Secret<PrivateKeyDer<'static>>,
    /// The leaf certificate, as reports show it.
    pub leaf: CertInfo,
    /// Where it came from.
    pub format: IdentityFormat,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: Secret::new(self.key.expose().clone_key()),
            leaf: self.leaf.clone(),
            format: self.format,
        }
    }
}

/// A target's configured client certificate: the files, and what reading
/// them gave when the configuration (generation) was built.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The files it is read from.
    pub files: IdentityFiles,
    /// The leaf certificate and the container, or why it cannot be used.
    pub loaded: Result<(CertInfo, IdentityFormat), IdentityError>,
}

impl ClientCert {
    /// Reads `files` now.
    pub fn read(files: IdentityFiles) -> (Self, Option<ClientIdentity>) {
        match load(&files) {
            Ok(id) => (
                Self {
                    files,
                    loaded: Ok((id.leaf.clone(), id.format)),
                },
                Some(id),
            ),
            Err(e) => (
                Self {
                    files,
                    loaded: Err(e),
                },
                None,
            ),
        }
    }

    /// The leaf certificate, when it was read.
    pub fn leaf(&self) -> Option<&CertInfo> {
        self.loaded.as_ref().ok().map(|(c, _)| c)
    }

    /// The error, when it was not.
    pub fn error(&self) -> Option<&IdentityError> {
        self.loaded.as_ref().err()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("leaf", &self.leaf)
            .field("chain_len", &self.certs.len())
            .field("format", &self.format)
            .field("key", &self.key)
            .finish()
    }
}

/// Why a client certificate could not be used: the closed set of
/// `egress_cert_read_errors_total{reason}` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertReadReason {
    /// A file cannot be opened or read (missing, permissions, too large, not UTF-8 for a password).
    Unreadable,
    /// The PKCS#12 password is wrong (the integrity check or the decryption failed).
    BadPassword,
    /// The file holds no certificate (not PEM certificates, not PKCS#12).
    NotACertificate,
    /// No private key: none in the PEM key file, or none in the PKCS#12 bundle.
    NoKey,
    /// The key does not belong to the certificate, or rustls cannot use it.
    KeyMismatch,
    /// The PKCS#12 bundle is encrypted with a scheme this build cannot read.
    UnsupportedEncryption,
}

impl CertReadReason {
    /// Every reason, for zero-initialised counters.
    pub const ALL: [CertReadReason; 6] = [
        Self::Unreadable,
        Self::BadPassword,
        Self::NotACertificate,
        Self::NoKey,
        Self::KeyMismatch,
        Self::UnsupportedEncryption,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::BadPassword => "bad_password",
            Self::NotACertificate => "not_a_certificate",
            Self::NoKey => "no_key",
            Self::KeyMismatch => "key_mismatch",
            Self::UnsupportedEncryption => "unsupported_encryption",
        }
    }
}

impl fmt::Display for CertReadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client certificate that cannot be used: the reason label and a message
/// that names the file and says what to do. Never holds file content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct IdentityError {
    /// The label.
    pub reason: CertReadReason,
    /// What is wrong, where, and what to do.
    pub message: String,
}

impl IdentityError {
    fn new(reason: CertReadReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Reads a client identity: PKCS#12 when `files.password` is set or the
/// certificate file is not PEM, PEM otherwise (the key from `files.key`, or
/// from the certificate file itself).
pub fn load(files: &IdentityFiles) -> Result<ClientIdentity, IdentityError> {
    let unreadable =
        |e: crate::files::ReadError| IdentityError::new(CertReadReason::Unreadable, e.to_string());
    let data = crate::files::read_bytes(&files.cert, MAX_FILE).map_err(unreadable)?;
    let looks_pem = data
        .windows(b"-----BEGIN".len())
        .any(|w| w == b"-----BEGIN");
    let identity = if files.password.is_some() || !looks_pem {
        let password = match &files.password {
            Some(p) => read_password(p)?,
            // A bundle exported without a password.
            None => Secret::new(String::new()),
        };
        from_pkcs12(&files.cert, &data, &password, files.password.as_deref())?
    } else {
        from_pem(&files.cert, &data, files.key.as_deref())?
    };
    check_pair(&files.cert, &identity)?;
    Ok(identity)
}

/// The password: the file's first line, without its line end.
fn read_password(path: &Path) -> Result<Secret<String>, IdentityError> {
    let text = crate::files::read_text(path, MAX_FILE)
        .map_err(|e| IdentityError::new(CertReadReason::Unreadable, e.to_string()))?;
    let line = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(Secret::new(line.to_string()))
}

fn leaf_info(path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, IdentityError> {
    CertInfo::from_der(der).ok_or_else(|| {
        IdentityError::new(
            CertReadReason::NotACertificate,
            format!(
                "{}: the first certificate is not parseable X.509",
                path.display()
            ),
        )
    })
}

fn from_pem(
    path: &Path,
    data: &[u8],
    key_path: Option<&Path>,
) -> Result<ClientIdentity, IdentityError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(data)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            IdentityError::new(
                CertReadReason::NotACertificate,
                format!("{} is not valid PEM: {e}", path.display()),
            )
        })?;
    let Some(first) = certs.first() else {
        return Err(IdentityError::new(
            CertReadReason::NotACertificate,
            format!(
                "{} holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\", or a PKCS#12 file)",
                path.display()
            ),
        ));
    };
    let leaf = leaf_info(path, first)?;
    let (key_data, key_file) = match key_path {
        Some(k) => (
            crate::files::read_bytes(k, MAX_FILE)
                .map_err(|e| IdentityError::new(CertReadReason::Unreadable, e.to_string()))?,
            k,
        ),
        None => (data.to_vec(), path),
    };
    let key = PrivateKeyDer::from_pem_slice(&key_data).map_err(|_| {
        let hint = if key_path.is_none() {
            ": set client_key to the PEM key file, or use a PKCS#12 file"
        } else {
            ""
        };
        IdentityError::new(
            CertReadReason::NoKey,
            format!(
                "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1; its content is not shown){hint}",
                key_file.display()
            ),
        )
    })?;
    Ok(ClientIdentity {
        certs,
        key: Secret::new(key),
        leaf,
        format: IdentityFormat::Pem,
    })
}

fn from_pkcs12(
    path: &Path,
    data: &[u8],
    password: &Secret<String>,
    password_file: Option<&Path>,
) -> Result<ClientIdentity, IdentityError> {
    let store = p12_keystore::KeyStore::from_pkcs12(data, password.expose())
        .map_err(|e| pkcs12_refused(e, path, data, password_file))?;
    let Some((_, chain)) = store.private_key_chain() else {
        return Err(IdentityError::new(
            CertReadReason::NoKey,
            format!(
                "{}: the PKCS#12 file holds no private key with its certificate; export it with the key (`openssl pkcs12 -export -in cert.pem -inkey key.pem -out cert.p12`)",
                path.display()
            ),
        ));
    };
    let certs: Vec<CertificateDer<'static>> = chain
        .chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    let Some(first) = certs.first() else {
        return Err(IdentityError::new(
            CertReadReason::NotACertificate,
            format!(
                "{}: the PKCS#12 file holds a key but no certificate for it",
                path.display()
            ),
        ));
    };
    let leaf = leaf_info(path, first)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().to_vec()));
    Ok(ClientIdentity {
        certs,
        key: Secret::new(key),
        leaf,
        format: IdentityFormat::Pkcs12,
    })
}

/// Why p12_keystore could not open `path`, in the words of what to do.
fn pkcs12_refused(
    e: p12_keystore::error::Error,
    path: &Path,
    data: &[u8],
    password_file: Option<&Path>,
) -> IdentityError {
    use p12_keystore::error::Error as P12;
    match e {
        P12::MacError(_) | P12::UnpadError => bad_password(path, password_file),
        P12::Pkcs5Error(ref m) if m.contains("decryption failed") => {
            bad_password(path, password_file)
        }
        P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm | P12::Pkcs5Error(_) => {
            let ciphers = legacy_ciphers(data);
            IdentityError::new(
                CertReadReason::UnsupportedEncryption,
                format!(
                    "{}: the PKCS#12 file is encrypted with {}, which this build cannot read; {REEXPORT}",
                    path.display(),
                    if ciphers.is_empty() {
                        "an unsupported scheme".to_string()
                    } else {
                        ciphers.join(" and ")
                    }
                ),
            )
        }
        P12::DerError(_) | P12::InvalidVersion | P12::UnsupportedContentType => IdentityError::new(
            CertReadReason::NotACertificate,
            format!(
                "{} is neither PEM nor PKCS#12: expected a certificate (\"-----BEGIN CERTIFICATE-----\") or a .p12/.pfx bundle",
                path.display()
            ),
        ),
        other => IdentityError::new(
            CertReadReason::NotACertificate,
            format!(
                "{}: the PKCS#12 file cannot be parsed ({other}); {REEXPORT}",
                path.display()
            ),
        ),
    }
}

/// The integrity check or the decryption failed: the password is wrong.
fn bad_password(path: &Path, password_file: Option<&Path>) -> IdentityError {
    let which = match password_file {
        Some(p) => format!("the password in {}", p.display()),
        None => "an empty password (no client_cert_password_file is set)".to_string(),
    };
    IdentityError::new(
        CertReadReason::BadPassword,
        format!(
            "{}: cannot open the PKCS#12 file with {which}: the integrity check or decryption failed; check that the password file holds exactly the export password",
            path.display()
        ),
    )
}

/// The key must belong to the leaf and be a kind rustls can sign with.
fn check_pair(path: &Path, id: &ClientIdentity) -> Result<(), IdentityError> {
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(id.certs.clone(), id.key.expose().clone_key(), &provider)
        .map(|_| ())
        .map_err(|e| {
            IdentityError::new(
                CertReadReason::KeyMismatch,
                format!(
                    "{}: the private key cannot be used with the certificate ({e}); check that the key and certificate were issued together",
                    path.display()
                ),
            )
        })
}

/// The legacy PKCS#12 encryption schemes (RFC 7292 appendix C) named in
/// `data`, found by their DER-encoded object identifiers.
pub fn legacy_ciphers(data: &[u8]) -> Vec<&'static str> {
    // 1.2.840.113549.1.12.1.x: 06 0A 2A 86 48 86 F7 0D 01 0C 01 x
    const PREFIX: [u8; 11] = [
        0x06, 0x0A, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x0C, 0x01,
    ];
    let names = [
        (1u8, "pbeWithSHAAnd128BitRC4"),
        (2, "pbeWithSHAAnd40BitRC4"),
        (3, "pbeWithSHAAnd3-KeyTripleDES-CBC"),
        (4, "pbeWithSHAAnd2-KeyTripleDES-CBC"),
        (5, "pbeWithSHAAnd128BitRC2-CBC"),
        (6, "pbeWithSHAAnd40BitRC2-CBC"),
    ];
    let mut found = Vec::new();
    for w in data.windows(PREFIX.len() + 1) {
        if w[..PREFIX.len()] == PREFIX {
            if let Some((_, name)) = names.iter().find(|(n, _)| *n == w[PREFIX.len()]) {
                if !found.contains(name) {
                    found.push(*name);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_cipher_oids_are_named() {
        let mut data = vec![0u8; 4];
        data.extend_from_slice(&[
            0x06, 0x0A, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x0C, 0x01, 0x06,
        ]);
        data.extend_from_slice(&[
            0x06, 0x0A, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x0C, 0x01, 0x01,
        ]);
        assert_eq!(
            legacy_ciphers(&data),
            vec!["pbeWithSHAAnd40BitRC2-CBC", "pbeWithSHAAnd128BitRC4"]
        );
        assert!(legacy_ciphers(b"plain").is_empty());
    }

    #[test]
    fn a_missing_file_is_unreadable_and_names_it() {
        let e = load(&IdentityFiles {
            cert: PathBuf::from("/nonexistent/cert.p12"),
            key: None,
            password: None,
        })
        .expect_err("missing");
        assert_eq!(e.reason, CertReadReason::Unreadable);
        assert!(e.message.contains("/nonexistent/cert.p12"), "{e}");
    }
}
