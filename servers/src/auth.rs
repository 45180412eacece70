//! Who is calling, for every front: bearer tokens mapped to accounts in config. The gRPC front
//! reads the token from `authorization` metadata, the WebSocket front from an `auth` command;
//! both ask [`Tokens`].

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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("token {0:?} maps to account 0, which the engine reserves")]
    AccountZero(String),
    #[error("an empty token would let any `Bearer ` header in")]
    EmptyToken,
}

/// The checked token table, cheap to clone.
#[derive(Debug, Clone)]
pub struct Tokens {
    tokens: Arc<HashMap<String, AccountId>>,
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
        Ok(Tokens {
            tokens: Arc::new(config.tokens.clone()),
            market_data_requires_token: config.market_data_requires_token,
        })
    }

    /// The account `token` trades for, if it is a known token.
    pub fn account(&self, token: &str) -> Option<AccountId> {
        self.tokens.get(token).copied()
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
        })
        .unwrap();
        assert_eq!(tokens.account("secret-a"), Some(11));
        assert_eq!(tokens.account("secret-b"), None);
        assert_eq!(tokens.account(""), None);
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
