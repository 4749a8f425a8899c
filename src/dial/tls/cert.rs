//! What a report shows of a certificate ([`CertInfo`]: subject, issuer,
//! expiry, fingerprint), parsed from DER, and the one RFC 3339 formatter
//! for the instants reports print. It never verifies anything.

use rustls::pki_types::CertificateDer;
use serde::Serialize;

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

/// SHA-256 of `bytes`, lower-case hex.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_464_383), "2026-11-23T20:06:23Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
