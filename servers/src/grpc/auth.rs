//! Who is calling: `authorization: Bearer <token>` metadata, with tokens mapped to accounts by
//! the shared [`crate::auth`] table. Order RPCs always need a token; market data only when
//! configured so.

use crate::auth::Tokens;
pub use crate::auth::{AuthConfig, AuthConfigError};
use ticker_engine::AccountId;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// The shared token table, read from request metadata.
#[derive(Debug, Clone)]
pub struct Auth {
    tokens: Tokens,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Auth, AuthConfigError> {
        Ok(Auth {
            tokens: Tokens::new(config)?,
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
            .account(token)
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// Whether the caller may read market data.
    pub fn market_data(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.tokens.market_data_requires_token() {
            self.account(metadata)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn auth(public: bool) -> Auth {
        Auth::new(&AuthConfig {
            tokens: HashMap::from([("secret-a".to_string(), 11)]),
            market_data_requires_token: !public,
            ..AuthConfig::default()
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
}
