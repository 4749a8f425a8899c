//! An Entra ID certificate credential read from its two PEM files: the
//! certificate's thumbprint (`x5t#S256`) and `notAfter`, and its RSA key,
//! checked to belong to it. Messages name the file and what to do, never
//! its content.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::jwt::{self, SigningKey};
use super::{CannotRun, read_file};

/// The certificate credential, ready to sign assertions.
pub(super) struct CertCredential {
    /// The RSA key (PS256).
    pub key: SigningKey,
    /// base64url SHA-256 of the certificate's DER.
    pub x5t_s256: String,
    /// The certificate's `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for CertCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertCredential")
            .field("key", &"<redacted>")
            .field("x5t_s256", &self.x5t_s256)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Reads `cert` (PEM, the first CERTIFICATE) and `key` (an RSA key, PKCS#8
/// or PKCS#1 PEM).
pub(super) fn load(cert: &Path, key: &Path) -> Result<CertCredential, CannotRun> {
    let pem = read_file(cert)?;
    let der = CertificateDer::pem_slice_iter(&pem)
        .find_map(Result::ok)
        .ok_or_else(|| {
            CannotRun(format!(
                "{}: no CERTIFICATE block; client_cert must be the application's certificate in PEM",
                cert.display()
            ))
        })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| {
        CannotRun(format!(
            "{}: the first CERTIFICATE block is not a valid X.509 certificate; export it again in PEM",
            cert.display()
        ))
    })?;
    let signing = rsa_key(key)?;
    let SigningKey::Rsa(pair) = &signing else {
        return Err(not_rsa(key));
    };
    use ring::signature::KeyPair as _;
    if parsed.public_key().subject_public_key.data.as_ref() != pair.public_key().as_ref() {
        return Err(CannotRun(format!(
            "{} is not the key of the certificate in {}; mount the certificate and its own key together",
            key.display(),
            cert.display()
        )));
    }
    Ok(CertCredential {
        key: signing,
        x5t_s256: jwt::x5t_s256(der.as_ref()),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

fn not_rsa(key: &Path) -> CannotRun {
    CannotRun(format!(
        "{}: not an RSA private key; Entra certificate credentials need RSA (PS256)",
        key.display()
    ))
}

/// An RSA private key from PEM (`PRIVATE KEY` or `RSA PRIVATE KEY`).
fn rsa_key(key: &Path) -> Result<SigningKey, CannotRun> {
    let pem = read_file(key)?;
    let signing = match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(PrivateKeyDer::Pkcs8(k)) => SigningKey::rsa_pkcs8(k.secret_pkcs8_der()),
        Ok(PrivateKeyDer::Pkcs1(k)) => SigningKey::rsa_pkcs1(k.secret_pkcs1_der()),
        _ => None,
    };
    signing.ok_or_else(|| not_rsa(key))
}
