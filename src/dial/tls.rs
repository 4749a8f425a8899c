//! TLS as a client, with rustls: trust stores (native roots, webpki roots,
//! extra CA files), client identities, the handshake stage, and what a report
//! needs to know about the peer's certificate — even when verification fails
//! — and about the trust anchor a verified chain ends in.
//!
//! Owns [`TlsClient`] (one per target or `https://` proxy, built at config
//! load), [`CertInfo`] and the interception verdict ([`TrustVerdict`]):
//! a chain is judged by the anchor it validated through (Mozilla's public
//! roots, or the target's `expect_ca`), never by its issuer, because
//! upstreams rotate intermediates. It never decides what a failure *means*;
//! that is `dial::classify`'s job.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsConnector;

use super::stream::BoxStream;

/// The most bytes read from a CA or certificate file.
const MAX_PEM_FILE: u64 = 4 * 1024 * 1024;

/// Installs rustls' `ring` provider as the process default. Idempotent.
pub fn install_default_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which built-in roots to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootsMode {
    /// The operating system's store (`rustls-native-certs`).
    Native,
    /// Mozilla's roots compiled in (`webpki-roots`).
    Webpki,
    /// None: only the configured CA files.
    None,
}

/// The root store for `mode`, before any CA file is added.
pub fn base_roots(mode: RootsMode) -> RootCertStore {
    let mut store = RootCertStore::empty();
    match mode {
        RootsMode::Native => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "could not load some native root certificates");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "loaded native root certificates");
        }
        RootsMode::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootsMode::None => {}
    }
    store
}

/// Why a CA file gave no certificates.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error(transparent)]
    Unreadable(#[from] crate::files::ReadError),
    /// The file is not PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: rustls::pki_types::pem::Error,
    },
    /// The file is PEM without a certificate.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
}

/// Reads every certificate in a PEM file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let pem = read_pem(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|source| CaFileError::NotPem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CaFileError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A client certificate chain and its private key.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_pem(path: &Path) -> Result<Vec<u8>, crate::files::ReadError> {
    crate::files::read_bytes(path, MAX_PEM_FILE)
}

/// Expiry of a DER certificate, in Unix seconds.
pub fn cert_not_after(der: &CertificateDer<'_>) -> Option<i64> {
    CertInfo::from_der(der).map(|c| c.not_after_unix)
}

/// TLS client settings toward one kind of peer.
#[derive(Clone)]
pub struct TlsClient {
    /// The shared settings; each handshake clones them with its own recording verifier.
    base: Arc<ClientConfig>,
    /// The real verifier, wrapped per handshake.
    verifier: Arc<WebPkiServerVerifier>,
    /// The roots the verifier trusts, to find the anchor a chain ends in.
    roots: Arc<RootCertStore>,
    /// Which anchors are expected; `None`: no interception verdict (proxies).
    expect: Option<Arc<TrustExpectation>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("alpn", &self.base.alpn_protocols)
            .field(
                "client_auth",
                &self.base.client_auth_cert_resolver.has_certs(),
            )
            .field("expect", &self.expect)
            .finish()
    }
}

/// What a finished handshake tells.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// The peer's end-entity certificate.
    pub peer: Option<CertInfo>,
    /// The anchor the chain validated through, and whether it was expected.
    pub trust: Option<TrustVerdict>,
}

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

    fn expects(&self, anchor: &TrustAnchor<'_>) -> bool {
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
    fn of(anchor: &TrustAnchor<'_>) -> Self {
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

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A failed handshake: the error, and the certificate the peer showed, if any.
#[derive(Debug)]
pub struct TlsFailure {
    /// The I/O error (a rustls error inside, for TLS problems).
    pub error: io::Error,
    /// The peer's certificate, when it got that far.
    pub peer: Option<CertInfo>,
}

/// Why TLS client settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    /// No root to verify a chain against.
    #[error("no trusted roots: set tls.roots to \"native\" or \"webpki\", or name a ca_file")]
    NoRoots,
    /// rustls refused the roots.
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    /// rustls refused the protocol versions.
    #[error("TLS settings: {0}")]
    Protocols(#[source] rustls::Error),
    /// The client identity's certificate and key are not a pair.
    #[error("the client certificate and key do not fit together: {0}")]
    ClientAuth(#[source] rustls::Error),
}

impl TlsClient {
    /// Builds settings with `roots`, an optional client identity, and ALPN protocols.
    pub fn new(
        roots: Arc<RootCertStore>,
        identity: Option<Identity>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Self, TlsClientError> {
        if roots.is_empty() {
            return Err(TlsClientError::NoRoots);
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(TlsClientError::Verifier)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsClientError::Protocols)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut config = match identity {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(TlsClientError::ClientAuth)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn;
        Ok(Self {
            base: Arc::new(config),
            verifier,
            roots,
            expect: None,
        })
    }

    /// Judges every verified chain against `expect` (targets; not proxies).
    pub fn expecting(mut self, expect: TrustExpectation) -> Self {
        self.expect = Some(Arc::new(expect));
        self
    }

    /// The anchors chains are expected to end in, when judged.
    pub fn expectation(&self) -> Option<&TrustExpectation> {
        self.expect.as_deref()
    }

    /// True when a client certificate is configured.
    pub fn has_client_cert(&self) -> bool {
        self.base.client_auth_cert_resolver.has_certs()
    }

    /// The TLS stage: handshakes with `server_name` over `stream`.
    pub async fn handshake(
        &self,
        stream: BoxStream,
        server_name: &str,
    ) -> Result<(BoxStream, TlsInfo), TlsFailure> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut config = (*self.base).clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(Recording {
                inner: self.verifier.clone(),
                roots: self.roots.clone(),
                expect: self.expect.clone(),
                seen: seen.clone(),
            }));
        let peer_of = |seen: &Mutex<Seen>| {
            seen.lock()
                .ok()
                .and_then(|g| g.leaf.as_ref().and_then(CertInfo::from_der))
        };
        let trust_of = |seen: &Mutex<Seen>| seen.lock().ok().and_then(|g| g.trust.clone());
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| TlsFailure {
            error: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{server_name}` is not a valid TLS server name"),
            ),
            peer: None,
        })?;
        match TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
        {
            Ok(tls) => {
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let info = TlsInfo {
                    alpn,
                    peer: peer_of(&seen),
                    trust: trust_of(&seen),
                };
                Ok((Box::new(tls), info))
            }
            Err(error) => Err(TlsFailure {
                error,
                peer: peer_of(&seen),
            }),
        }
    }
}

/// What the recording verifier saw during one handshake.
#[derive(Debug, Default)]
struct Seen {
    /// The end-entity certificate.
    leaf: Option<CertificateDer<'static>>,
    /// The anchor of the verified chain, judged.
    trust: Option<TrustVerdict>,
}

/// Records the end-entity certificate, lets the real verifier decide, and
/// on success finds the anchor the chain validated through.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    expect: Option<Arc<TrustExpectation>>,
    seen: Arc<Mutex<Seen>>,
}

impl Recording {
    /// The anchor webpki builds the path to. rustls' verifier does not say
    /// which one it used, so the path is built again here (only after it
    /// passed: this never changes a verdict).
    fn verdict(
        &self,
        expect: &TrustExpectation,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Option<TrustVerdict> {
        let ee = webpki::EndEntityCert::try_from(end_entity).ok()?;
        let algs = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        let path = ee
            .verify_for_usage(
                algs,
                &self.roots.roots,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .ok()?;
        Some(TrustVerdict {
            anchor: AnchorInfo::of(path.anchor()),
            expected: expect.describe(),
            intercepted: !expect.expects(path.anchor()),
        })
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut slot) = self.seen.lock() {
            slot.leaf = Some(end_entity.clone().into_owned());
        }
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Some(expect) = &self.expect {
            let verdict = self.verdict(expect, end_entity, intermediates, now);
            if let Ok(mut slot) = self.seen.lock() {
                slot.trust = verdict;
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a report shows of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Expiry, RFC 3339 UTC.
    pub not_after: String,
    /// Expiry, Unix seconds.
    #[serde(skip)]
    pub not_after_unix: i64,
    /// SHA-256 of the DER encoding, lower-case hex.
    pub sha256: String,
}

impl CertInfo {
    /// Parses a DER certificate; `None` when it is not parseable X.509.
    pub fn from_der(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let not_after_unix = cert.validity().not_after.timestamp();
        Some(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: rfc3339(not_after_unix),
            not_after_unix,
            sha256: sha256_hex(der.as_ref()),
        })
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-23T20:06:23Z`).
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
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

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_464_383), "2026-11-23T20:06:23Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
