//! Certificates made with rcgen: one test CA for the whole run, leaves for
//! upstreams (valid, expired, wrong name), an unknown CA standing in for an
//! intercepting proxy, and client certificates — also expiring on a chosen
//! day, with their expiry in Unix seconds for exact metric checks.

use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA that can issue.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    cert: Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    /// Certificate chain, PEM (leaf only).
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl Ca {
    /// A new CA named `cn`.
    pub fn new(cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Self {
            cert_pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A server certificate for `names`, valid now unless `expired`.
    pub fn server(&self, names: &[&str], expired: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.sign(params)
    }

    /// A client certificate named `cn`.
    pub fn client(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A client certificate named `cn` that expires at midnight UTC `days`
    /// days from today (negative: already expired), and that expiry in Unix
    /// seconds.
    pub fn client_expiring(&self, cn: &str, days: i64) -> (Leaf, i64) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let unix = expiring(&mut params, days);
        (self.sign(params), unix)
    }

    /// A server certificate for `names` that expires at midnight UTC `days`
    /// days from today, and that expiry in Unix seconds.
    pub fn server_expiring(&self, names: &[&str], days: i64) -> (Leaf, i64) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let unix = expiring(&mut params, days);
        (self.sign(params), unix)
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// The certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        rustls::pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .expect("leaf PEM")
    }

    /// The private key, PKCS#8 DER.
    pub fn key_der(&self) -> Vec<u8> {
        rustls::pki_types::pem::PemObject::from_pem_slice(self.key_pem.as_bytes())
            .map(|k: rustls::pki_types::PrivatePkcs8KeyDer<'static>| k.secret_pkcs8_der().to_vec())
            .expect("key PEM")
    }
}

/// Sets validity to end at midnight UTC `days` from today (starting a year
/// earlier, and never later than yesterday); returns the end in Unix seconds.
fn expiring(params: &mut CertificateParams, days: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let today = now.div_euclid(86_400);
    let day = today + days;
    let (y, m, d) = ymd((day - 365).min(today - 1));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(day);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    day * 86_400
}

/// The (year, month, day) of a day counted from 1970-01-01.
fn ymd(day: i64) -> (i32, u8, u8) {
    let text = egress_sentinel::dial::tls::rfc3339(day * 86_400);
    let part = |r: std::ops::Range<usize>| text[r].parse::<i32>().expect("date part");
    (part(0..4), part(5..7) as u8, part(8..10) as u8)
}

/// The CA every fixture config trusts.
pub fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::new("egress-sentinel test CA"))
}

/// A CA nobody trusts: an intercepting proxy's.
pub fn rogue_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::new("Intercepting Proxy CA"))
}

/// A P-256 key as an APNs `.p8` (PKCS#8 PEM) and its uncompressed public
/// key (what Apple keeps).
pub fn p256() -> (String, Vec<u8>) {
    let kp = rcgen::KeyPair::generate().expect("p256");
    (kp.serialize_pem(), kp.public_key_raw().to_vec())
}

/// A 2048-bit RSA key, PKCS#8 PEM, by openssl (a service account's).
pub fn rsa_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA"])
        .args(["-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .expect("openssl genpkey");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).expect("pem")
}
