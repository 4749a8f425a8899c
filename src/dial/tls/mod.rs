//! TLS as a client, with rustls: client settings toward one kind of peer
//! ([`TlsClient`], one per target or `https://` proxy, built at config
//! load), client identities, and the handshake stage, whose verifier records
//! the peer's certificate — even when verification fails — and the trust
//! anchor a verified chain ends in. It never decides what a failure
//! *means*; that is `dial::classify`'s job.
//!
//! # Layout
//! - [`roots`]: the built-in root stores and the CA files a config names.
//! - [`anchors`]: the interception verdict ([`TrustVerdict`]): a chain is
//!   judged by the anchor it validated through (Mozilla's public roots, or
//!   the target's `expect_ca`).
//! - [`cert`]: what a report shows of a certificate ([`CertInfo`]) and the
//!   RFC 3339 formatter.
//! - `memo`: the leaves and verdicts a client already worked out, so a
//!   handshake with a known chain neither parses its leaf nor builds its
//!   path a second time.

pub(crate) mod anchors;
pub(crate) mod cert;
mod memo;
pub(crate) mod roots;

use std::io;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::stream::BoxStream;
pub use anchors::{AnchorInfo, NotAnAnchor, TrustExpectation, TrustVerdict};
pub use cert::{CertInfo, rfc3339};
use memo::ChainMemo;
pub use roots::{CaFileError, RootsMode, base_roots, load_ca_file};

/// Installs rustls' `ring` provider as the process default. Idempotent.
pub fn install_default_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client certificate chain and its private key.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

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
    /// The leaves and verdicts seen so far with these settings.
    memo: Arc<ChainMemo>,
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
        // Every handshake has a verifier of its own (the recording one), and
        // rustls resumes only with the verifier a session was made with: no
        // session is ever resumed, so none is kept (each probe a full
        // handshake, as it must be; the tickets upstreams send are dropped).
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            base: Arc::new(config),
            verifier,
            roots,
            expect: None,
            memo: Arc::default(),
        })
    }

    /// The same trust (and expectation), without a client identity and
    /// speaking HTTP/1.1: a credential check's token URL on another host.
    pub fn without_identity(&self) -> Result<Self, TlsClientError> {
        let mut c = Self::new(self.roots.clone(), None, vec![b"http/1.1".to_vec()])?;
        c.expect = self.expect.clone();
        Ok(c)
    }

    /// Judges every verified chain against `expect` (targets; not proxies).
    pub fn expecting(mut self, expect: TrustExpectation) -> Self {
        self.expect = Some(Arc::new(expect));
        // Verdicts were judged against the old expectation.
        self.memo = Arc::default();
        self
    }

    /// The anchors chains are expected to end in, when judged.
    pub fn expectation(&self) -> Option<&TrustExpectation> {
        self.expect.as_deref()
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
                memo: self.memo.clone(),
                seen: seen.clone(),
            }));
        let peer_of = |seen: &Mutex<Seen>| {
            seen.lock()
                .ok()
                .and_then(|g| g.leaf.as_ref().and_then(|l| self.memo.cert_info(l)))
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
    memo: Arc<ChainMemo>,
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
            let verdict = self.memo.verdict(end_entity, intermediates, now, || {
                self.verdict(expect, end_entity, intermediates, now)
            });
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
