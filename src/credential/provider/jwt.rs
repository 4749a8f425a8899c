//! Signed JSON Web Tokens for credential checks: base64url, and `sign` for
//! the algorithms providers ask for (PS256 for Entra certificate
//! credentials, RS256 for Google service accounts, ES256 for APNs provider
//! tokens). Keys come in already parsed; nothing here reads a file, and a
//! signed token is the caller's to drop after the one request it is for.

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair,
};

/// The JWS algorithms a check signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PSS with SHA-256 (Entra certificate credentials).
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Google service accounts).
    Rs256,
    /// ECDSA P-256 with SHA-256 (APNs provider tokens).
    Es256,
}

impl Alg {
    /// The name in a JWT header's `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Ps256 => "PS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// A private key a token is signed with. `Debug` never shows it.
pub enum SigningKey {
    /// An RSA key (PS256, RS256).
    Rsa(RsaKeyPair),
    /// A P-256 key (ES256).
    Ec(EcdsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Rsa(_) => f.write_str("SigningKey::Rsa(<redacted>)"),
            SigningKey::Ec(_) => f.write_str("SigningKey::Ec(<redacted>)"),
        }
    }
}

impl SigningKey {
    /// An RSA key from PKCS#8 DER.
    pub fn rsa_pkcs8(der: &[u8]) -> Option<Self> {
        RsaKeyPair::from_pkcs8(der).ok().map(SigningKey::Rsa)
    }

    /// An RSA key from PKCS#1 (`RSA PRIVATE KEY`) DER.
    pub fn rsa_pkcs1(der: &[u8]) -> Option<Self> {
        RsaKeyPair::from_der(der).ok().map(SigningKey::Rsa)
    }

    /// A P-256 key from PKCS#8 DER (an APNs `.p8`).
    pub fn es256_pkcs8(der: &[u8]) -> Option<Self> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
            .ok()
            .map(SigningKey::Ec)
    }
}

/// Why a token could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The key does not fit the algorithm (an EC key for PS256, say).
    #[error("a {0} token needs a key of another type")]
    WrongKey(&'static str),
    /// ring refused to sign (no randomness, a key too small).
    #[error("signing a {0} token failed")]
    Failed(&'static str),
}

/// `header_json` and `claims_json`, signed with `key` by `alg`: the compact
/// JWS `header.claims.signature`, each part base64url.
pub fn sign(
    alg: Alg,
    key: &SigningKey,
    header_json: &str,
    claims_json: &str,
) -> Result<String, SignError> {
    let input = format!(
        "{}.{}",
        b64url(header_json.as_bytes()),
        b64url(claims_json.as_bytes())
    );
    let rng = SystemRandom::new();
    let signature = match (alg, key) {
        (Alg::Ps256 | Alg::Rs256, SigningKey::Rsa(k)) => {
            let padding: &'static dyn ring::signature::RsaEncoding = if alg == Alg::Ps256 {
                &RSA_PSS_SHA256
            } else {
                &RSA_PKCS1_SHA256
            };
            let mut sig = vec![0u8; k.public().modulus_len()];
            k.sign(padding, &rng, input.as_bytes(), &mut sig)
                .map_err(|_| SignError::Failed(alg.name()))?;
            sig
        }
        (Alg::Es256, SigningKey::Ec(k)) => k
            .sign(&rng, input.as_bytes())
            .map_err(|_| SignError::Failed(alg.name()))?
            .as_ref()
            .to_vec(),
        _ => return Err(SignError::WrongKey(alg.name())),
    };
    Ok(format!("{input}.{}", b64url(&signature)))
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 7515's encoding).
pub fn b64url(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(B64URL[((n >> shift) & 63) as usize]));
            }
        }
    }
    out
}

/// Decodes base64url (padding optional) or, with `+` and `/`, standard
/// base64; `None` on anything else.
pub fn b64_decode(input: &str) -> Option<Vec<u8>> {
    let input = input.trim_end_matches('=');
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

/// The SHA-256 thumbprint of a certificate's DER, base64url: a JWT
/// header's `x5t#S256`.
pub fn x5t_s256(cert_der: &[u8]) -> String {
    b64url(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
        UnparsedPublicKey, VerificationAlgorithm,
    };

    /// A fresh 2048-bit RSA key, PKCS#8 PEM, from openssl.
    fn rsa_pem() -> String {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl genpkey");
        assert!(out.status.success(), "openssl genpkey failed");
        String::from_utf8(out.stdout).expect("pem")
    }

    fn der_of(pem: &str) -> Vec<u8> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .expect("key")
            .secret_der()
            .to_vec()
    }

    fn verify(token: &str, alg: &'static dyn VerificationAlgorithm, public: &[u8]) -> bool {
        let (input, sig) = token.rsplit_once('.').expect("three parts");
        UnparsedPublicKey::new(alg, public)
            .verify(input.as_bytes(), &b64_decode(sig).expect("b64"))
            .is_ok()
    }

    #[test]
    fn ps256_and_rs256_tokens_verify_with_the_public_key() {
        let key = SigningKey::rsa_pkcs8(&der_of(&rsa_pem())).expect("rsa");
        let SigningKey::Rsa(pair) = &key else {
            panic!("rsa")
        };
        let public = pair.public().as_ref().to_vec();
        let ps = sign(Alg::Ps256, &key, r#"{"alg":"PS256"}"#, r#"{"a":1}"#).expect("ps256");
        assert!(verify(&ps, &RSA_PSS_2048_8192_SHA256, &public));
        assert!(!verify(&ps, &RSA_PKCS1_2048_8192_SHA256, &public));
        let rs = sign(Alg::Rs256, &key, r#"{"alg":"RS256"}"#, r#"{"a":1}"#).expect("rs256");
        assert!(verify(&rs, &RSA_PKCS1_2048_8192_SHA256, &public));
        let mut tampered = ps.clone();
        tampered.insert(3, 'x');
        assert!(!verify(&tampered, &RSA_PSS_2048_8192_SHA256, &public));
        assert_eq!(
            sign(Alg::Es256, &key, "{}", "{}"),
            Err(SignError::WrongKey("ES256"))
        );
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key() {
        let kp = rcgen::KeyPair::generate().expect("p256");
        let key = SigningKey::es256_pkcs8(&kp.serialize_der()).expect("ec");
        let SigningKey::Ec(pair) = &key else {
            panic!("ec")
        };
        let public = pair.public_key().as_ref().to_vec();
        let t = sign(Alg::Es256, &key, r#"{"alg":"ES256"}"#, "{}").expect("es256");
        assert!(verify(&t, &ECDSA_P256_SHA256_FIXED, &public));
        assert!(format!("{key:?}").contains("redacted"));
    }

    #[test]
    fn base64url_round_trips_and_matches_rfc4648() {
        assert_eq!(b64url(b"foob"), "Zm9vYg");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(b64_decode(&b64url(&data)).as_deref(), Some(&data[..]));
        }
        assert_eq!(b64_decode("Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        assert_eq!(b64_decode("a+/="), Some(vec![0x6b, 0xef]));
        assert_eq!(b64_decode("Zm9v!"), None);
    }
}
