//! The interception verdict: which anchors a target's chains should end
//! in ([`TrustExpectation`]), the anchor a verified chain did end in
//! ([`AnchorInfo`]), and the two judged together ([`TrustVerdict`]). A chain
//! is judged by its anchor, never by its issuer, because upstreams rotate
//! intermediates. It never verifies a chain itself: the handshake's
//! verifier does, and hands it the anchor.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustls::pki_types::{CertificateDer, TrustAnchor};
use serde::{Deserialize, Serialize};

use super::cert::sha256_hex;

/// Which trust anchors a target's certificate chains should end in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustExpectation {
    /// One of the public roots: Mozilla's list, compiled in (`webpki-roots`).
    /// A root that only the operating system's store or a `ca_file` adds
    /// is not one of them.
    PublicRoots,
    /// One of the CA certificates in the target's `expect_ca` file.
    Named {
        /// The file, for reports.
        file: String,
        /// The anchors' public keys (SPKI contents, as webpki keeps them).
        spkis: Vec<Vec<u8>>,
    },
}

/// An `expect_ca` certificate that cannot be a trust anchor.
#[derive(Debug, thiserror::Error)]
#[error("{} holds a certificate that cannot be a trust anchor: {source}", file.display())]
pub struct NotAnAnchor {
    /// The `expect_ca` file.
    file: PathBuf,
    /// What webpki said.
    source: webpki::Error,
}

impl TrustExpectation {
    /// The expectation made from `expect_ca` certificates.
    pub fn named(file: &Path, certs: &[CertificateDer<'_>]) -> Result<Self, NotAnAnchor> {
        let mut spkis = Vec::new();
        for c in certs {
            let anchor = webpki::anchor_from_trusted_cert(c).map_err(|source| NotAnAnchor {
                file: file.to_path_buf(),
                source,
            })?;
            spkis.push(anchor.subject_public_key_info.as_ref().to_vec());
        }
        Ok(Self::Named {
            file: file.display().to_string(),
            spkis,
        })
    }

    /// In words, for reports: `the public roots` or `expect_ca /path/ca.pem`.
    pub fn describe(&self) -> String {
        match self {
            Self::PublicRoots => "the public roots".to_string(),
            Self::Named { file, .. } => format!("expect_ca {file}"),
        }
    }

    /// True when `anchor` is one of the expected anchors.
    pub(super) fn expects(&self, anchor: &TrustAnchor<'_>) -> bool {
        let spki = anchor.subject_public_key_info.as_ref();
        match self {
            Self::PublicRoots => public_spkis().contains(spki),
            Self::Named { spkis, .. } => spkis.iter().any(|s| s.as_slice() == spki),
        }
    }
}

/// The public keys of Mozilla's roots.
fn public_spkis() -> &'static HashSet<&'static [u8]> {
    static SET: OnceLock<HashSet<&'static [u8]>> = OnceLock::new();
    SET.get_or_init(|| {
        webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .map(|a| {
                let spki: &'static [u8] = a.subject_public_key_info.as_ref();
                spki
            })
            .collect()
    })
}

/// A trust anchor, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorInfo {
    /// The anchor's subject distinguished name.
    pub subject: String,
    /// SHA-256 of its public key (SPKI), lower-case hex: names the CA across re-issues.
    pub spki_sha256: String,
    /// True when it is one of Mozilla's public roots.
    pub public: bool,
}

impl AnchorInfo {
    /// The anchor, as reports show it.
    pub(super) fn of(anchor: &TrustAnchor<'_>) -> Self {
        let spki = anchor.subject_public_key_info.as_ref();
        Self {
            subject: name_of(anchor.subject.as_ref()),
            spki_sha256: sha256_hex(&der_sequence(spki)),
            public: public_spkis().contains(spki),
        }
    }
}

/// The anchor a verified chain ended in, judged against the expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustVerdict {
    /// The anchor.
    pub anchor: AnchorInfo,
    /// What was expected, in words.
    pub expected: String,
    /// True when the anchor is not an expected one: someone in the path
    /// re-signed the connection with a CA we happen to trust.
    pub intercepted: bool,
}

/// A DER SEQUENCE around `content` (webpki keeps names and keys without it).
fn der_sequence(content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![0x30];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A distinguished name from its DER contents (`CN=..., O=...`).
fn name_of(content: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    let der = der_sequence(content);
    match x509_parser::x509::X509Name::from_der(&der) {
        Ok((_, name)) => name.to_string(),
        Err(_) => format!("<unparsable name, {} bytes>", content.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_roots_are_mozillas_and_a_private_ca_is_not() {
        for root in webpki_roots::TLS_SERVER_ROOTS {
            assert!(TrustExpectation::PublicRoots.expects(root));
            let info = AnchorInfo::of(root);
            assert!(info.public);
            assert!(!info.subject.starts_with("<unparsable"), "{info:?}");
            assert_eq!(info.spki_sha256.len(), 64);
        }
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Private CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let der = params.self_signed(&key).expect("cert").der().clone();
        let anchor = webpki::anchor_from_trusted_cert(&der).expect("anchor");
        assert!(!TrustExpectation::PublicRoots.expects(&anchor));
        let info = AnchorInfo::of(&anchor);
        assert_eq!(info.subject, "CN=Private CA");
        assert!(!info.public);
        let named = TrustExpectation::named(Path::new("ca.pem"), std::slice::from_ref(&der))
            .expect("named");
        assert!(named.expects(&anchor));
        assert!(!named.expects(&webpki_roots::TLS_SERVER_ROOTS[0]));
        assert_eq!(named.describe(), "expect_ca ca.pem");
    }
}
