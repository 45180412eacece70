//! Who is calling: `authorization: Bearer <token>` metadata, with tokens mapped to accounts in
//! config. Order RPCs always need a token; market data only when configured so.

use std::collections::HashMap;
use std::sync::Arc;
use ticker_engine::AccountId;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// Tokens and what needs them; defaults in brackets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Bearer tokens and the account each one trades for [none: no order entry]. Account 0 is
    /// reserved by the engine and cannot be given.
    pub tokens: HashMap<String, AccountId>,
    /// Whether market data needs a token too [false: public].
    pub market_data_requires_token: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("token {0:?} maps to account 0, which the engine reserves")]
    AccountZero(String),
    #[error("an empty token would let any `Bearer ` header in")]
    EmptyToken,
}

#[derive(Debug, Clone)]
pub struct Auth {
    tokens: Arc<HashMap<String, AccountId>>,
    market_data_requires_token: bool,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Auth, AuthConfigError> {
        for (token, account) in &config.tokens {
            if token.is_empty() {
                return Err(AuthConfigError::EmptyToken);
            }
            if *account == 0 {
                return Err(AuthConfigError::AccountZero(token.clone()));
            }
        }
        Ok(Auth {
            tokens: Arc::new(config.tokens.clone()),
            market_data_requires_token: config.market_data_requires_token,
        })
    }

    /// The calling account, or UNAUTHENTICATED saying what is wrong with the credentials.
    pub fn account(&self, metadata: &MetadataMap) -> Result<AccountId, Status> {
        let Some(value) = metadata.get("authorization") else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata",
            ));
        };
        let value = value
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(Status::unauthenticated(
                    "authorization must be `Bearer <token>`",
                ))
            }
        };
        self.tokens
            .get(token)
            .copied()
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// Whether the caller may read market data.
    pub fn market_data(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.market_data_requires_token {
            self.account(metadata)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(public: bool) -> Auth {
        Auth::new(&AuthConfig {
            tokens: HashMap::from([("secret-a".to_string(), 11)]),
            market_data_requires_token: !public,
        })
        .unwrap()
    }

    fn with(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn a_known_bearer_token_names_its_account() {
        assert_eq!(auth(true).account(&with("Bearer secret-a")).unwrap(), 11);
        assert_eq!(auth(true).account(&with("bearer secret-a")).unwrap(), 11);
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
        let a = auth(true);
        for m in [
            MetadataMap::new(),
            with("secret-a"),
            with("Basic secret-a"),
            with("Bearer nope"),
        ] {
            assert_eq!(
                a.account(&m).unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
    }

    #[test]
    fn market_data_is_public_unless_configured() {
        assert!(auth(true).market_data(&MetadataMap::new()).is_ok());
        assert!(auth(false).market_data(&MetadataMap::new()).is_err());
        assert!(auth(false).market_data(&with("Bearer secret-a")).is_ok());
    }

    #[test]
    fn account_zero_and_empty_tokens_are_refused() {
        let zero = AuthConfig {
            tokens: HashMap::from([("t".to_string(), 0)]),
            ..AuthConfig::default()
        };
        assert!(matches!(
            Auth::new(&zero),
            Err(AuthConfigError::AccountZero(_))
        ));
        let empty = AuthConfig {
            tokens: HashMap::from([(String::new(), 1)]),
            ..AuthConfig::default()
        };
        assert_eq!(Auth::new(&empty).unwrap_err(), AuthConfigError::EmptyToken);
    }
}
