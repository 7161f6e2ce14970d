//! JSON Web Signature handling for ACME (RFC 8555 §6.2, RFC 7515, RFC 7517, RFC 7638).
//!
//! Requests are flattened JWS JSON objects `{"protected","payload","signature"}`. This module
//! parses them without trusting anything ([`parse`] never panics on any input), verifies
//! signatures with `aws-lc-rs` for ES256, RS256 and EdDSA, and computes JWK thumbprints.
//! Which of `jwk`/`kid` a request must carry, and the nonce and URL checks, are decided by the
//! caller (see [`super::request`]).

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::problem::{Problem, ProblemKind};

/// Algorithms accepted in the protected header (RFC 8555 §6.2 requires ES256 and EdDSA is
/// recommended; RS256 is what most clients use with RSA keys).
pub const SUPPORTED_ALGS: &[&str] = &["ES256", "RS256", "EdDSA"];

/// A parsed, not yet verified, flattened JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    /// The protected header as sent (base64url), part of the signing input.
    pub protected_b64: String,
    /// The payload as sent (base64url), part of the signing input.
    pub payload_b64: String,
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// The decoded protected header.
    pub header: ProtectedHeader,
    /// The decoded payload (empty for POST-as-GET, RFC 8555 §6.3).
    pub payload: Vec<u8>,
}

/// The protected header fields ACME uses (RFC 8555 §6.2).
#[derive(Debug, Clone)]
pub struct ProtectedHeader {
    /// `alg`: one of [`SUPPORTED_ALGS`] (checked by [`parse`]).
    pub alg: String,
    /// `nonce`, absent in the inner JWS of a key change.
    pub nonce: Option<String>,
    /// `url`: must equal the request URL.
    pub url: String,
    /// `kid`: the account URL.
    pub kid: Option<String>,
    /// `jwk`: the embedded public key.
    pub jwk: Option<Jwk>,
}

/// A public key in JWK form, restricted to the key types we verify with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwk {
    /// `kty: EC`, `crv: P-256`, with the coordinates (32 bytes each).
    EcP256 {
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
    /// `kty: RSA` with modulus and exponent (big-endian, leading zeros stripped).
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// `kty: OKP`, `crv: Ed25519` (32-byte public key).
    Ed25519 {
        /// The public key.
        x: Vec<u8>,
    },
}

/// Decodes base64url without padding (RFC 7515 §2); tolerates trailing `=`.
pub fn b64d(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// Encodes base64url without padding.
pub fn b64e(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn strip_leading_zeros(v: &[u8]) -> Vec<u8> {
    let i = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    v[i..].to_vec()
}

impl Jwk {
    /// Parses a JWK object (RFC 7517, RFC 7518 §6, RFC 8037 §2).
    pub fn from_json(v: &Value) -> Result<Jwk, Problem> {
        let obj = v.as_object().ok_or_else(|| Problem::malformed("jwk is not an object"))?;
        let field = |name: &str| -> Result<Vec<u8>, Problem> {
            obj.get(name)
                .and_then(Value::as_str)
                .and_then(b64d)
                .ok_or_else(|| Problem::malformed(format!("jwk member '{name}' is missing or not base64url")))
        };
        let kty = obj.get("kty").and_then(Value::as_str).unwrap_or("");
        let crv = obj.get("crv").and_then(Value::as_str).unwrap_or("");
        match (kty, crv) {
            ("EC", "P-256") => {
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(Problem::malformed("P-256 jwk coordinates must be 32 bytes"));
                }
                Ok(Jwk::EcP256 { x, y })
            }
            ("EC", other) => Err(Problem::new(
                ProblemKind::BadSignatureAlgorithm,
                format!("EC curve '{other}' is not supported (use P-256)"),
            )),
            ("RSA", _) => {
                let (n, e) = (strip_leading_zeros(&field("n")?), strip_leading_zeros(&field("e")?));
                if n.len() < 256 || n.len() > 1024 || e.is_empty() || e.len() > 8 {
                    return Err(Problem::malformed("RSA jwk must have a 2048-8192 bit modulus"));
                }
                Ok(Jwk::Rsa { n, e })
            }
            ("OKP", "Ed25519") => {
                let x = field("x")?;
                if x.len() != 32 {
                    return Err(Problem::malformed("Ed25519 jwk must be 32 bytes"));
                }
                Ok(Jwk::Ed25519 { x })
            }
            _ => Err(Problem::new(
                ProblemKind::BadSignatureAlgorithm,
                format!("jwk key type '{kty}' / curve '{crv}' is not supported"),
            )),
        }
    }

    /// The JWK as JSON with only its required members (what we store in `acme_accounts.jwk`).
    pub fn to_json(&self) -> Value {
        match self {
            Jwk::EcP256 { x, y } => serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64e(x), "y": b64e(y)}),
            Jwk::Rsa { n, e } => serde_json::json!({"kty": "RSA", "n": b64e(n), "e": b64e(e)}),
            Jwk::Ed25519 { x } => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64e(x)}),
        }
    }

    /// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, no
    /// whitespace, base64url.
    pub fn thumbprint(&self) -> String {
        let canonical = match self {
            Jwk::EcP256 { x, y } => {
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, b64e(x), b64e(y))
            }
            Jwk::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64e(e), b64e(n)),
            Jwk::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64e(x)),
        };
        b64e(&Sha256::digest(canonical.as_bytes()))
    }

    /// Whether `alg` is the algorithm this key signs with.
    pub fn matches_alg(&self, alg: &str) -> bool {
        matches!(
            (self, alg),
            (Jwk::EcP256 { .. }, "ES256") | (Jwk::Rsa { .. }, "RS256") | (Jwk::Ed25519 { .. }, "EdDSA")
        )
    }

    /// Verifies `sig` over `message` with this key under `alg`.
    pub fn verify(&self, alg: &str, message: &[u8], sig: &[u8]) -> bool {
        if !self.matches_alg(alg) {
            return false;
        }
        match self {
            Jwk::EcP256 { x, y } => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                // RFC 7518 §3.4: the JWS signature is R || S, 64 bytes ("FIXED" encoding).
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point).verify(message, sig).is_ok()
            }
            Jwk::Rsa { n, e } => signature::RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            Jwk::Ed25519 { x } => UnparsedPublicKey::new(&signature::ED25519, x).verify(message, sig).is_ok(),
        }
    }

    /// The key of a certificate's SubjectPublicKeyInfo as a JWK, when it is a type we support
    /// (used by revocation signed with the certificate key, RFC 8555 §7.6).
    pub fn from_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<Jwk> {
        use x509_parser::public_key::PublicKey;
        match spki.parsed().ok()? {
            PublicKey::EC(point) => {
                let data = point.data();
                if data.len() == 65 && data[0] == 0x04 {
                    Some(Jwk::EcP256 { x: data[1..33].to_vec(), y: data[33..].to_vec() })
                } else {
                    None
                }
            }
            PublicKey::RSA(rsa) => {
                Some(Jwk::Rsa { n: strip_leading_zeros(rsa.modulus), e: strip_leading_zeros(rsa.exponent) })
            }
            _ => {
                // Ed25519 (OID 1.3.101.112): the key is the raw BIT STRING.
                let oid = spki.algorithm.algorithm.to_id_string();
                let raw = spki.subject_public_key.data.as_ref();
                (oid == "1.3.101.112" && raw.len() == 32).then(|| Jwk::Ed25519 { x: raw.to_vec() })
            }
        }
    }
}

impl Jws {
    /// The bytes the signature covers: `protected "." payload` (RFC 7515 §5.2).
    pub fn signing_input(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.protected_b64.len() + 1 + self.payload_b64.len());
        v.extend_from_slice(self.protected_b64.as_bytes());
        v.push(b'.');
        v.extend_from_slice(self.payload_b64.as_bytes());
        v
    }

    /// Verifies the signature with `key`; `malformed` on failure (RFC 8555 §6.2).
    pub fn verify_with(&self, key: &Jwk) -> Result<(), Problem> {
        if !key.matches_alg(&self.header.alg) {
            return Err(bad_alg(format!("alg {} does not match the key type", self.header.alg)));
        }
        if key.verify(&self.header.alg, &self.signing_input(), &self.signature) {
            Ok(())
        } else {
            Err(Problem::malformed("JWS signature is invalid"))
        }
    }

    /// The payload parsed as JSON; POST-as-GET (empty payload) is `None`.
    pub fn payload_json(&self) -> Result<Option<Value>, Problem> {
        if self.payload.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&self.payload)
            .map(Some)
            .map_err(|e| Problem::malformed(format!("payload is not JSON: {e}")))
    }
}

fn bad_alg(detail: String) -> Problem {
    let mut p = Problem::new(ProblemKind::BadSignatureAlgorithm, detail);
    p.algorithms = Some(SUPPORTED_ALGS.to_vec());
    p
}

/// Parses a flattened JWS from the request body (RFC 8555 §6.2: flattened JSON serialization
/// only, no unprotected header, exactly one of `jwk`/`kid`, alg among [`SUPPORTED_ALGS`]).
/// Never panics; every failure is a problem document.
pub fn parse(body: &[u8]) -> Result<Jws, Problem> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Problem::malformed("body is not a JWS JSON object"))?;
    let obj = v.as_object().ok_or_else(|| Problem::malformed("body is not a JWS JSON object"))?;
    if obj.contains_key("header") || obj.contains_key("signatures") {
        return Err(Problem::malformed("only the flattened JWS serialization without unprotected header is allowed"));
    }
    let get = |k: &str| -> Result<&str, Problem> {
        obj.get(k).and_then(Value::as_str).ok_or_else(|| Problem::malformed(format!("JWS member '{k}' is missing")))
    };
    let protected_b64 = get("protected")?.to_string();
    let payload_b64 = get("payload")?.to_string();
    let signature = b64d(get("signature")?).ok_or_else(|| Problem::malformed("JWS signature is not base64url"))?;
    let payload = b64d(&payload_b64).ok_or_else(|| Problem::malformed("JWS payload is not base64url"))?;
    let header_bytes =
        b64d(&protected_b64).ok_or_else(|| Problem::malformed("JWS protected header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header_bytes)
        .map_err(|_| Problem::malformed("JWS protected header is not a JSON object"))?;
    let header = parse_header(&header)?;
    Ok(Jws { protected_b64, payload_b64, signature, header, payload })
}

fn parse_header(h: &Map<String, Value>) -> Result<ProtectedHeader, Problem> {
    let alg = h.get("alg").and_then(Value::as_str).ok_or_else(|| Problem::malformed("protected header lacks 'alg'"))?;
    if !SUPPORTED_ALGS.contains(&alg) {
        return Err(bad_alg(format!("unsupported JWS algorithm '{alg}'")));
    }
    let url = h.get("url").and_then(Value::as_str).ok_or_else(|| Problem::malformed("protected header lacks 'url'"))?;
    let nonce = match h.get("nonce") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Problem::malformed("protected header 'nonce' is not a string")),
    };
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Problem::malformed("protected header 'kid' is not a string")),
    };
    let jwk = h.get("jwk").map(Jwk::from_json).transpose()?;
    // RFC 8555 §6.2: "jwk" and "kid" are mutually exclusive, and one must be present.
    match (&kid, &jwk) {
        (Some(_), Some(_)) => return Err(Problem::malformed("protected header has both 'jwk' and 'kid'")),
        (None, None) => return Err(Problem::malformed("protected header has neither 'jwk' nor 'kid'")),
        _ => {}
    }
    Ok(ProtectedHeader { alg: alg.to_string(), nonce, url: url.to_string(), kid, jwk })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn es256_key() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("gen");
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("kp");
        let pubk = kp.public_key().as_ref().to_vec();
        let jwk = Jwk::EcP256 { x: pubk[1..33].to_vec(), y: pubk[33..].to_vec() };
        (kp, jwk)
    }

    fn sign_es256(kp: &EcdsaKeyPair, header: &Value, payload: &[u8]) -> Vec<u8> {
        let p = b64e(header.to_string().as_bytes());
        let pl = b64e(payload);
        let sig = kp.sign(&SystemRandom::new(), format!("{p}.{pl}").as_bytes()).expect("sign");
        serde_json::json!({"protected": p, "payload": pl, "signature": b64e(sig.as_ref())}).to_string().into_bytes()
    }

    #[test]
    fn an_es256_jws_round_trips_and_verifies() {
        let (kp, jwk) = es256_key();
        let header = serde_json::json!({"alg": "ES256", "jwk": jwk.to_json(), "nonce": "n1", "url": "http://x/acme/new-account"});
        let body = sign_es256(&kp, &header, br#"{"termsOfServiceAgreed":true}"#);
        let jws = parse(&body).expect("parses");
        assert_eq!(jws.header.nonce.as_deref(), Some("n1"));
        assert_eq!(jws.header.jwk.as_ref(), Some(&jwk));
        jws.verify_with(&jwk).expect("verifies");
        let (_, other) = es256_key();
        assert!(jws.verify_with(&other).is_err());
    }

    #[test]
    fn an_ed25519_signature_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("gen");
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("kp");
        let jwk = Jwk::Ed25519 { x: kp.public_key().as_ref().to_vec() };
        let sig = kp.sign(b"a.b");
        assert!(jwk.verify("EdDSA", b"a.b", sig.as_ref()));
        assert!(!jwk.verify("ES256", b"a.b", sig.as_ref()));
        assert!(!jwk.verify("EdDSA", b"a.c", sig.as_ref()));
    }

    #[test]
    fn an_rs256_signature_verifies_and_a_tampered_one_does_not() {
        use aws_lc_rs::rsa::KeySize;
        use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
        let kp = RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa");
        let pk = kp.public_key();
        let jwk = Jwk::from_json(&serde_json::json!({
            "kty": "RSA",
            "n": b64e(pk.modulus().big_endian_without_leading_zero()),
            "e": b64e(pk.exponent().big_endian_without_leading_zero()),
        }))
        .expect("jwk");
        let mut sig = vec![0u8; kp.public_modulus_len()];
        kp.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), b"p.q", &mut sig).expect("sign");
        assert!(jwk.verify("RS256", b"p.q", &sig));
        assert!(!jwk.verify("RS256", b"p.r", &sig));
        assert!(!jwk.verify("ES256", b"p.q", &sig));
        // A 1024-bit modulus is refused at parse time.
        let small = serde_json::json!({"kty": "RSA", "n": b64e(&[0xc5; 128]), "e": "AQAB"});
        assert!(Jwk::from_json(&small).is_err());
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk = Jwk::from_json(&serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
        }))
        .expect("jwk");
        assert_eq!(jwk.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn garbage_and_hostile_headers_are_rejected() {
        let (kp, jwk) = es256_key();
        assert!(parse(b"").is_err());
        assert!(parse(b"{").is_err());
        assert!(parse(b"[]").is_err());
        assert!(parse(br#"{"protected":"!!","payload":"","signature":""}"#).is_err());
        let none = serde_json::json!({"alg": "none", "jwk": jwk.to_json(), "nonce": "n", "url": "u"});
        let e = parse(&sign_es256(&kp, &none, b"{}")).expect_err("alg none");
        assert_eq!(e.kind, ProblemKind::BadSignatureAlgorithm);
        let hs = serde_json::json!({"alg": "HS256", "kid": "k", "nonce": "n", "url": "u"});
        assert_eq!(parse(&sign_es256(&kp, &hs, b"{}")).expect_err("HS256").kind, ProblemKind::BadSignatureAlgorithm);
        let both = serde_json::json!({"alg": "ES256", "kid": "k", "jwk": jwk.to_json(), "nonce": "n", "url": "u"});
        assert_eq!(parse(&sign_es256(&kp, &both, b"{}")).expect_err("both").kind, ProblemKind::Malformed);
        let neither = serde_json::json!({"alg": "ES256", "nonce": "n", "url": "u"});
        assert!(parse(&sign_es256(&kp, &neither, b"{}")).is_err());
        let mut tampered = parse(&sign_es256(
            &kp,
            &serde_json::json!({"alg": "ES256", "jwk": jwk.to_json(), "nonce": "n", "url": "u"}),
            b"{}",
        ))
        .expect("parse");
        tampered.payload_b64 = b64e(b"{\"x\":1}");
        assert!(tampered.verify_with(&jwk).is_err());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics_and_rejects_random_bytes(body in proptest::collection::vec(any::<u8>(), 0..600)) {
                prop_assert!(parse(&body).is_err());
            }

            #[test]
            fn parse_never_panics_on_random_members(p in "\\PC{0,80}", pl in "[A-Za-z0-9_=-]{0,80}", sig in "\\PC{0,80}") {
                let body = serde_json::json!({"protected": p, "payload": pl, "signature": sig}).to_string();
                let _ = parse(body.as_bytes());
            }

            #[test]
            fn a_well_formed_jws_with_a_random_signature_never_verifies(
                alg in prop_oneof![Just("ES256".to_string()), Just("RS256".to_string()), Just("EdDSA".to_string()), Just("HS256".to_string()), Just("none".to_string()), "[A-Za-z0-9]{0,8}"],
                x in proptest::collection::vec(any::<u8>(), 32),
                y in proptest::collection::vec(any::<u8>(), 32),
                sig in proptest::collection::vec(any::<u8>(), 0..130),
                payload in "\\PC{0,40}",
            ) {
                let header = serde_json::json!({
                    "alg": alg, "nonce": "n", "url": "http://h/acme/new-account",
                    "jwk": {"kty": "EC", "crv": "P-256", "x": b64e(&x), "y": b64e(&y)},
                });
                let body = serde_json::json!({
                    "protected": b64e(header.to_string().as_bytes()),
                    "payload": b64e(payload.as_bytes()),
                    "signature": b64e(&sig),
                }).to_string();
                let outcome = parse(body.as_bytes()).and_then(|j| {
                    let k = j.header.jwk.clone().ok_or_else(|| Problem::malformed("no jwk"))?;
                    j.verify_with(&k)
                });
                prop_assert!(outcome.is_err());
            }
        }
    }
}
