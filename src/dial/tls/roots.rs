//! Where trust starts: the built-in root stores (the system's, Mozilla's
//! compiled in, or none) and the CA files a config names, read bounded.
//! It never judges a chain: that is the verifier's (`tls`) and the
//! anchors' (`anchors`) job.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The most bytes read from a CA or certificate file.
const MAX_PEM_FILE: u64 = 4 * 1024 * 1024;

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

/// A PEM file's bytes, bounded.
fn read_pem(path: &Path) -> Result<Vec<u8>, crate::files::ReadError> {
    crate::files::read_bytes(path, MAX_PEM_FILE)
}
