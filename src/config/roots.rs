//! Compiling TLS trust: the `[tls] roots` set every TLS client starts
//! from (with `[tls] ca_file`), and adding a CA file to a store, for the
//! `ca_file` and `expect_ca` of routes and targets.
//!
//! Owns reading CA files, each a named file of the generation. It never
//! builds a TLS client and never judges a certificate's expiry (that is
//! `targets.rs`).

use std::sync::Arc;

use rustls::RootCertStore;
use toml::Spanned;

use super::compile::{Compiler, Result};
use super::raw::RawConfig;
use crate::dial::tls::{self, RootsMode};

impl Compiler<'_> {
    pub(super) fn base_roots(&self, raw: &RawConfig) -> Result<Arc<RootCertStore>> {
        let mode = match &raw.tls.roots {
            None => RootsMode::Native,
            Some(s) => match s.get_ref().as_str() {
                "native" => RootsMode::Native,
                "webpki" => RootsMode::Webpki,
                "none" => RootsMode::None,
                other => {
                    return Err(self.err(
                        s.span(),
                        "tls.roots",
                        format!("`{other}` is not a root set: expected \"native\", \"webpki\" or \"none\" (only ca_file)"),
                    ));
                }
            },
        };
        let mut store = tls::base_roots(mode);
        if let Some(ca) = &raw.tls.ca_file {
            self.add_ca(&mut store, ca, "tls.ca_file")?;
        }
        Ok(Arc::new(store))
    }

    pub(super) fn add_ca(
        &self,
        store: &mut RootCertStore,
        ca: &Spanned<String>,
        key: &str,
    ) -> Result<()> {
        let path = self.file(ca.get_ref());
        let certs =
            tls::load_ca_file(&path).map_err(|e| self.err(ca.span(), key, e.to_string()))?;
        for c in certs {
            store.add(c).map_err(|e| {
                self.err(
                    ca.span(),
                    key,
                    format!(
                        "{} holds a certificate rustls cannot use as a root: {e}",
                        path.display()
                    ),
                )
            })?;
        }
        Ok(())
    }
}
