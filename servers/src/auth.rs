//! Who is calling, for every front: bearer tokens mapped to accounts in config. The gRPC front
//! reads the token from `authorization` metadata, the WebSocket front from an `auth` command;
//! both ask [`Tokens`].

use crate::jwt::{looks_like_jwt, Hs256};
use std::collections::HashMap;
use std::sync::Arc;
use ticker_engine::AccountId;

/// Tokens and what needs them; defaults in brackets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Bearer tokens and the account each one trades for [none: no order entry]. Account 0 is
    /// reserved by the engine and cannot be given.
    pub tokens: HashMap<String, AccountId>,
    /// Whether market data needs a token too [false: public].
    pub market_data_requires_token: bool,
    /// Also accept JWTs signed with HS256 and this secret (`sub` = account, `exp` required)
    /// [none].
    pub jwt_hs256_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("token {0:?} maps to account 0, which the engine reserves")]
    AccountZero(String),
    #[error("an empty token would let any `Bearer ` header in")]
    EmptyToken,
    #[error("the JWT HS256 secret is shorter than 32 bytes")]
    WeakJwtSecret,
}

/// The checked token table, cheap to clone.
#[derive(Debug, Clone)]
pub struct Tokens {
    tokens: Arc<HashMap<String, AccountId>>,
    jwt: Option<Hs256>,
    market_data_requires_token: bool,
}

impl Tokens {
    pub fn new(config: &AuthConfig) -> Result<Tokens, AuthConfigError> {
        for (token, account) in &config.tokens {
            if token.is_empty() {
                return Err(AuthConfigError::EmptyToken);
            }
            if *account == 0 {
                return Err(AuthConfigError::AccountZero(token.clone()));
            }
        }
        let jwt = match &config.jwt_hs256_secret {
            // RFC 7518 §3.2: an HS256 key must be at least as long as the hash (32 bytes).
            Some(secret) if secret.len() < 32 => return Err(AuthConfigError::WeakJwtSecret),
            Some(secret) => Some(Hs256::new(secret.as_bytes())),
            None => None,
        };
        Ok(Tokens {
            tokens: Arc::new(config.tokens.clone()),
            jwt,
            market_data_requires_token: config.market_data_requires_token,
        })
    }

    /// The account `token` trades for: a configured token, or a valid JWT when a JWT secret is
    /// configured.
    pub fn account(&self, token: &str) -> Option<AccountId> {
        if let Some(account) = self.tokens.get(token) {
            return Some(*account);
        }
        let jwt = self.jwt.as_ref().filter(|_| looks_like_jwt(token))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        jwt.account(token, now).ok()
    }

    /// Whether reading market data needs a token.
    pub fn market_data_requires_token(&self) -> bool {
        self.market_data_requires_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_token_names_its_account_and_others_none() {
        let tokens = Tokens::new(&AuthConfig {
            tokens: HashMap::from([("secret-a".to_string(), 11)]),
            market_data_requires_token: false,
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(tokens.account("secret-a"), Some(11));
        assert_eq!(tokens.account("secret-b"), None);
        assert_eq!(tokens.account(""), None);
    }

    #[test]
    fn jwts_signed_with_the_configured_secret_name_their_account() {
        let secret = "0123456789abcdef0123456789abcdef";
        let tokens = Tokens::new(&AuthConfig {
            tokens: HashMap::from([("table-token".to_string(), 5)]),
            jwt_hs256_secret: Some(secret.into()),
            ..AuthConfig::default()
        })
        .unwrap();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let good = Hs256::new(secret.as_bytes()).sign(&serde_json::json!({"sub": "9", "exp": exp}));
        assert_eq!(tokens.account(&good), Some(9));
        assert_eq!(tokens.account("table-token"), Some(5));
        let other = Hs256::new(b"some other secret of 32 bytes!!!")
            .sign(&serde_json::json!({"sub": "9", "exp": exp}));
        assert_eq!(tokens.account(&other), None);
        let expired =
            Hs256::new(secret.as_bytes()).sign(&serde_json::json!({"sub": "9", "exp": 1}));
        assert_eq!(tokens.account(&expired), None);
        // Without a secret, JWTs are unknown tokens.
        let plain = Tokens::new(&AuthConfig::default()).unwrap();
        assert_eq!(plain.account(&good), None);
        let weak = AuthConfig {
            jwt_hs256_secret: Some("short".into()),
            ..AuthConfig::default()
        };
        assert_eq!(
            Tokens::new(&weak).unwrap_err(),
            AuthConfigError::WeakJwtSecret
        );
    }

    #[test]
    fn account_zero_and_empty_tokens_are_refused() {
        let zero = AuthConfig {
            tokens: HashMap::from([("t".to_string(), 0)]),
            ..AuthConfig::default()
        };
        assert!(matches!(
            Tokens::new(&zero),
            Err(AuthConfigError::AccountZero(_))
        ));
        let empty = AuthConfig {
            tokens: HashMap::from([(String::new(), 1)]),
            ..AuthConfig::default()
        };
        assert_eq!(
            Tokens::new(&empty).unwrap_err(),
            AuthConfigError::EmptyToken
        );
    }
}
