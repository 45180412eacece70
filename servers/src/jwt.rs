//! JWT bearer tokens signed with HS256 (RFC 7519 / RFC 7515), the optional alternative to the
//! configured token table: an identity service signs `{"sub": "<account>", "role": "<role>",
//! "exp": …}` with the shared secret, and both fronts accept the token without a table entry.
//! `role` is optional (`trader` when absent); a trader needs `sub`, `risk` and `admin` may
//! leave it out.
//!
//! Only what a trading front should accept is accepted: the header's `alg` must be exactly
//! `HS256` (never `none`, never another algorithm picked by the caller), the signature is checked
//! in constant time before the claims are read, `exp` is required and `nbf` is honoured, and
//! `sub`, when present, must be a non-zero account number; a `role` nobody knows is refused.
//!
//! The JWS work — parsing, base64url, the algorithm pin, HMAC-SHA256 verification — is the
//! `jsonwebtoken` crate's (on `ring`, which the TLS front already links): security code belongs
//! in a widely used, audited library. Times are checked here against the caller's clock, which
//! the library cannot be given, with the library still requiring `exp`.

use crate::auth::{Principal, Role};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

/// Why a JWT was refused (said to nobody but logs and tests: clients only learn "unknown token").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not three base64url parts")]
    Shape,
    #[error("header is not JSON with alg HS256 and typ JWT (if any)")]
    Algorithm,
    #[error("signature does not match")]
    Signature,
    #[error("claims are not a JSON object")]
    Claims,
    #[error("no exp claim, or it has passed")]
    Expired,
    #[error("nbf claim is in the future")]
    NotYetValid,
    #[error("sub is not a non-zero account number (or is missing for a trader)")]
    Subject,
    #[error("role is not one of trader, risk, admin")]
    Role,
}

/// Verifies HS256 tokens with one secret.
#[derive(Clone)]
pub struct Hs256 {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Hs256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str("Hs256(..)")
    }
}

impl Hs256 {
    pub fn new(secret: &[u8]) -> Self {
        // HS256 only; `exp` required. The library's own exp/nbf checks read the system clock,
        // so they are made in `principal` against the caller's `now` instead.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Hs256 {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
        }
    }

    /// Who a token speaks for, checked against `now` (seconds since the Unix epoch).
    pub fn principal(&self, token: &str, now: u64) -> Result<Principal, JwtError> {
        if token.split('.').count() != 3 {
            return Err(JwtError::Shape);
        }
        // The header is judged before the signature, so a token naming another algorithm is
        // refused for that whatever its signature.
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Algorithm)?;
        if header.alg != Algorithm::HS256 || header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return Err(JwtError::Algorithm);
        }
        let claims = jsonwebtoken::decode::<Value>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => JwtError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    JwtError::Algorithm
                }
                ErrorKind::Base64(_) | ErrorKind::InvalidToken => JwtError::Shape,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::ExpiredSignature => {
                    JwtError::Expired
                }
                _ => JwtError::Claims,
            })?
            .claims;
        let claims = claims.as_object().ok_or(JwtError::Claims)?;
        match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) if exp > now => {}
            _ => return Err(JwtError::Expired),
        }
        if let Some(nbf) = claims.get("nbf") {
            if nbf.as_u64().is_none_or(|nbf| nbf > now) {
                return Err(JwtError::NotYetValid);
            }
        }
        let role = match claims.get("role") {
            None => Role::Trader,
            Some(Value::String(name)) => Role::parse(name).ok_or(JwtError::Role)?,
            Some(_) => return Err(JwtError::Role),
        };
        let account = match claims.get("sub") {
            None => None,
            Some(Value::String(s)) if s.bytes().all(|b| b.is_ascii_digit()) => {
                Some(s.parse().map_err(|_| JwtError::Subject)?)
            }
            Some(Value::Number(n)) => Some(n.as_u64().ok_or(JwtError::Subject)?),
            Some(_) => return Err(JwtError::Subject),
        };
        match (role, account) {
            (_, Some(0)) | (Role::Trader, None) => Err(JwtError::Subject),
            (role, account) => Ok(Principal { role, account }),
        }
    }

    /// Signs `claims` (for tests and for operators minting tokens with this secret).
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("a JSON value serializes, and HS256 takes any key")
    }
}

/// Whether `token` has the shape of a JWT (three dot-separated parts), so that the token table
/// is not consulted for it and a table token is never parsed as one.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ticker_engine::AccountId;

    fn account_of(key: &Hs256, token: &str, now: u64) -> Result<AccountId, JwtError> {
        key.principal(token, now).map(|p| p.account.unwrap_or(0))
    }
    use serde_json::json;

    const NOW: u64 = 1_764_430_000;

    fn key() -> Hs256 {
        Hs256::new(b"a shared secret of the identity service")
    }

    #[test]
    fn a_signed_token_names_its_account() {
        let token = key().sign(&json!({"sub": "42", "exp": NOW + 60}));
        assert_eq!(account_of(&key(), &token, NOW), Ok(42));
        let token = key().sign(&json!({"sub": 7, "exp": NOW + 60, "nbf": NOW}));
        assert_eq!(account_of(&key(), &token, NOW), Ok(7));
    }

    #[test]
    fn the_rfc_7515_example_key_and_token_verify() {
        // RFC 7515 appendix A.1: the HS256 example (its exp, 1300819380, has long passed, so
        // the check is made at a time before it).
        let key_b64 = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        let key = Hs256::new(&URL_SAFE_NO_PAD.decode(key_b64).unwrap());
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        // The signature verifies; the example has no numeric sub, so it is refused for that.
        assert_eq!(
            account_of(&key, token, 1_300_819_379),
            Err(JwtError::Subject)
        );
        assert_eq!(
            account_of(&key, token, 1_300_819_380),
            Err(JwtError::Expired)
        );
    }

    #[test]
    fn a_wrong_secret_or_a_changed_claim_fails_the_signature() {
        let token = key().sign(&json!({"sub": "42", "exp": NOW + 60}));
        assert_eq!(
            account_of(&Hs256::new(b"another secret"), &token, NOW),
            Err(JwtError::Signature)
        );
        let forged_claims =
            URL_SAFE_NO_PAD.encode(json!({"sub": "1", "exp": NOW + 60}).to_string());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged_claims;
        assert_eq!(
            account_of(&key(), &parts.join("."), NOW),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let claims = URL_SAFE_NO_PAD.encode(json!({"sub": "42", "exp": NOW + 60}).to_string());
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"HS256","typ":"JWE"}"#,
            r#"not json"#,
        ] {
            let token = format!("{}.{claims}.", URL_SAFE_NO_PAD.encode(header));
            assert_eq!(
                account_of(&key(), &token, NOW),
                Err(JwtError::Algorithm),
                "{header}"
            );
        }
    }

    #[test]
    fn expiry_not_before_and_subject_are_enforced() {
        let cases = [
            (json!({"sub": "42"}), JwtError::Expired),
            (json!({"sub": "42", "exp": NOW}), JwtError::Expired),
            (
                json!({"sub": "42", "exp": NOW + 60, "nbf": NOW + 1}),
                JwtError::NotYetValid,
            ),
            (json!({"sub": "0", "exp": NOW + 60}), JwtError::Subject),
            (json!({"sub": "-3", "exp": NOW + 60}), JwtError::Subject),
            (json!({"sub": "alice", "exp": NOW + 60}), JwtError::Subject),
            (json!({"exp": NOW + 60}), JwtError::Subject),
            (
                json!({"role": "trader", "exp": NOW + 60}),
                JwtError::Subject,
            ),
            (
                json!({"role": "risk", "sub": 0, "exp": NOW + 60}),
                JwtError::Subject,
            ),
            (
                json!({"role": "root", "sub": "1", "exp": NOW + 60}),
                JwtError::Role,
            ),
            (json!({"role": "Admin", "exp": NOW + 60}), JwtError::Role),
            (
                json!({"role": 2, "sub": "1", "exp": NOW + 60}),
                JwtError::Role,
            ),
        ];
        for (claims, expected) in cases {
            let token = key().sign(&claims);
            assert_eq!(account_of(&key(), &token, NOW), Err(expected), "{claims}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        for token in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "...",
            "e30.e30.!!!",
            "e30.e30.e30",
        ] {
            assert!(account_of(&key(), token, NOW).is_err(), "{token:?}");
        }
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("alice-token"));
    }
}
