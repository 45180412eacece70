//! Who is calling: `authorization: Bearer <token>` metadata, with tokens mapped to roles and
//! accounts by the shared [`crate::auth`] table. Order RPCs need a token with an account, risk
//! RPCs the `risk` role, admin RPCs `admin`; market data needs a token only when configured so.
//! A token that is missing or unknown is UNAUTHENTICATED; a known token without the right is
//! PERMISSION_DENIED.

pub use crate::auth::{AuthConfig, AuthConfigError};
use crate::auth::{Principal, Role, Tokens};
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

    /// The account the caller trades for: UNAUTHENTICATED saying what is wrong with the
    /// credentials, or PERMISSION_DENIED for a token with no account.
    pub fn account(&self, metadata: &MetadataMap) -> Result<AccountId, Status> {
        let principal = self.principal(metadata)?;
        principal.account.ok_or_else(|| {
            Status::permission_denied(format!(
                "this token ({} role) has no account to trade for",
                principal.role
            ))
        })
    }

    /// The caller, if it holds `role` or a higher one; PERMISSION_DENIED naming the role
    /// needed otherwise.
    pub fn require(&self, metadata: &MetadataMap, role: Role) -> Result<Principal, Status> {
        let principal = self.principal(metadata)?;
        if principal.has(role) {
            Ok(principal)
        } else {
            Err(Status::permission_denied(format!(
                "this RPC needs the {role} role; the token has {}",
                principal.role
            )))
        }
    }

    /// Who is calling, or UNAUTHENTICATED saying what is wrong with the credentials.
    pub fn principal(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
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
            .principal(token)
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// Whether the caller may read market data.
    pub fn market_data(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.tokens.market_data_requires_token() {
            self.principal(metadata)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(public: bool) -> Auth {
        let mut config = AuthConfig {
            market_data_requires_token: !public,
            ..AuthConfig::traders([("secret-a", 11)])
        };
        config.tokens.insert(
            "desk".into(),
            Principal {
                role: Role::Risk,
                account: None,
            },
        );
        Auth::new(&config).unwrap()
    }

    #[test]
    fn roles_are_checked_and_trading_needs_an_account() {
        let a = auth(true);
        fn denied<T: std::fmt::Debug>(r: Result<T, Status>) -> bool {
            r.unwrap_err().code() == tonic::Code::PermissionDenied
        }
        assert!(denied(a.require(&with("Bearer secret-a"), Role::Risk)));
        assert!(a.require(&with("Bearer desk"), Role::Risk).is_ok());
        assert!(denied(a.require(&with("Bearer desk"), Role::Admin)));
        assert!(denied(a.account(&with("Bearer desk"))));
        assert_eq!(
            a.require(&with("Bearer nope"), Role::Trader)
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
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
        assert!(auth(false).market_data(&with("Bearer desk")).is_ok());
    }
}
