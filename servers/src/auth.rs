//! Who is calling, for every front: bearer tokens mapped in config to a role and (for trading)
//! an account. The gRPC front reads the token from `authorization` metadata, the WebSocket front
//! from an `auth` command; both ask [`Tokens`].
//!
//! Roles, from least to most: a `trader` trades for one account and sees only that account; a
//! `risk` token reads every account (drop copy, positions, limits) and may use the kill switch;
//! an `admin` token may do all that and also change instruments, halts and limits. Trading needs
//! an account whatever the role: a `risk` or `admin` token without one cannot place orders.

use crate::jwt::{looks_like_jwt, Hs256};
use std::collections::HashMap;
use std::sync::Arc;
use ticker_engine::AccountId;

/// What a token may do. Ordered: each role may do everything the ones before it may (but
/// placing orders needs an account, [`Principal::account`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Trader,
    Risk,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Trader, Role::Risk, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Trader => "trader",
            Role::Risk => "risk",
            Role::Admin => "admin",
        }
    }

    /// The role named `name` exactly (lower case), as config and JWT `role` claims spell it.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal {
    pub role: Role,
    /// The account it trades for; always set for a trader, optional for risk and admin.
    pub account: Option<AccountId>,
}

impl Principal {
    pub fn trader(account: AccountId) -> Principal {
        Principal {
            role: Role::Trader,
            account: Some(account),
        }
    }

    /// Reads the command-line form of a grant: `ACCOUNT` (a trader of that account), `ROLE`
    /// or `ROLE:ACCOUNT`.
    pub fn parse_grant(grant: &str) -> Result<Principal, String> {
        let account = |text: &str| match text.parse::<AccountId>() {
            Ok(0) => Err("account 0 is reserved by the engine".to_string()),
            Ok(a) => Ok(a),
            Err(_) => Err(format!("account {text:?} is not a number")),
        };
        let role = |name: &str| {
            Role::parse(name)
                .ok_or_else(|| format!("unknown role {name:?}: one of trader, risk, admin"))
        };
        let principal = match grant.split_once(':') {
            None if grant.bytes().all(|b| b.is_ascii_digit()) => Principal::trader(account(grant)?),
            None => Principal {
                role: role(grant)?,
                account: None,
            },
            Some((r, a)) => Principal {
                role: role(r)?,
                account: Some(account(a)?),
            },
        };
        if principal.role == Role::Trader && principal.account.is_none() {
            return Err("a trader needs an account".into());
        }
        Ok(principal)
    }

    /// Whether this principal holds `role` or a higher one.
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }
}

/// Tokens and what needs them; defaults in brackets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Bearer tokens and who each one speaks for [none: no order entry]. Account 0 is reserved
    /// by the engine and cannot be given.
    pub tokens: HashMap<String, Principal>,
    /// Whether market data needs a token too [false: public].
    pub market_data_requires_token: bool,
    /// Also accept JWTs signed with HS256 and this secret (`sub` = account, `role` = role,
    /// `exp` required) [none].
    pub jwt_hs256_secret: Option<String>,
}

impl AuthConfig {
    /// Trader tokens only: token → account.
    pub fn traders<T: Into<String>>(tokens: impl IntoIterator<Item = (T, AccountId)>) -> Self {
        AuthConfig {
            tokens: tokens
                .into_iter()
                .map(|(t, a)| (t.into(), Principal::trader(a)))
                .collect(),
            ..AuthConfig::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("token {0:?} maps to account 0, which the engine reserves")]
    AccountZero(String),
    #[error("an empty token would let any `Bearer ` header in")]
    EmptyToken,
    #[error("the JWT HS256 secret is shorter than 32 bytes")]
    WeakJwtSecret,
    #[error("token {0:?} has the trader role but no account to trade for")]
    TraderWithoutAccount(String),
}

/// The checked token table, cheap to clone.
#[derive(Debug, Clone)]
pub struct Tokens {
    tokens: Arc<HashMap<String, Principal>>,
    jwt: Option<Hs256>,
    market_data_requires_token: bool,
}

impl Tokens {
    pub fn new(config: &AuthConfig) -> Result<Tokens, AuthConfigError> {
        for (token, principal) in &config.tokens {
            if token.is_empty() {
                return Err(AuthConfigError::EmptyToken);
            }
            match principal.account {
                Some(0) => return Err(AuthConfigError::AccountZero(token.clone())),
                None if principal.role == Role::Trader => {
                    return Err(AuthConfigError::TraderWithoutAccount(token.clone()))
                }
                _ => {}
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

    /// Who `token` speaks for: a configured token, or a valid JWT when a JWT secret is
    /// configured.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        if let Some(principal) = self.tokens.get(token) {
            return Some(*principal);
        }
        let jwt = self.jwt.as_ref().filter(|_| looks_like_jwt(token))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        jwt.principal(token, now).ok()
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
        let tokens = Tokens::new(&AuthConfig::traders([("secret-a", 11)])).unwrap();
        assert_eq!(tokens.principal("secret-a"), Some(Principal::trader(11)));
        assert_eq!(tokens.principal("secret-b"), None);
        assert_eq!(tokens.principal(""), None);
    }

    #[test]
    fn jwts_signed_with_the_configured_secret_name_their_account() {
        let secret = "0123456789abcdef0123456789abcdef";
        let tokens = Tokens::new(&AuthConfig {
            jwt_hs256_secret: Some(secret.into()),
            ..AuthConfig::traders([("table-token", 5)])
        })
        .unwrap();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let good = Hs256::new(secret.as_bytes()).sign(&serde_json::json!({"sub": "9", "exp": exp}));
        assert_eq!(tokens.principal(&good), Some(Principal::trader(9)));
        assert_eq!(tokens.principal("table-token"), Some(Principal::trader(5)));
        let other = Hs256::new(b"some other secret of 32 bytes!!!")
            .sign(&serde_json::json!({"sub": "9", "exp": exp}));
        assert_eq!(tokens.principal(&other), None);
        let expired =
            Hs256::new(secret.as_bytes()).sign(&serde_json::json!({"sub": "9", "exp": 1}));
        assert_eq!(tokens.principal(&expired), None);
        // Without a secret, JWTs are unknown tokens.
        let plain = Tokens::new(&AuthConfig::default()).unwrap();
        assert_eq!(plain.principal(&good), None);
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
        let zero = AuthConfig::traders([("t", 0)]);
        assert!(matches!(
            Tokens::new(&zero),
            Err(AuthConfigError::AccountZero(_))
        ));
        let empty = AuthConfig::traders([("", 1)]);
        assert_eq!(
            Tokens::new(&empty).unwrap_err(),
            AuthConfigError::EmptyToken
        );
    }

    #[test]
    fn roles_come_from_the_table_and_from_jwt_claims() {
        let secret = "0123456789abcdef0123456789abcdef";
        let mut config = AuthConfig::traders([("trader", 3)]);
        config.jwt_hs256_secret = Some(secret.into());
        let desk = Principal {
            role: Role::Risk,
            account: None,
        };
        config.tokens.insert("desk".into(), desk);
        let tokens = Tokens::new(&config).unwrap();
        assert_eq!(tokens.principal("desk"), Some(desk));
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let key = Hs256::new(secret.as_bytes());
        let admin = key.sign(&serde_json::json!({"role": "admin", "exp": exp}));
        assert_eq!(
            tokens.principal(&admin),
            Some(Principal {
                role: Role::Admin,
                account: None
            })
        );
        let risk_trading = key.sign(&serde_json::json!({"role": "risk", "sub": "8", "exp": exp}));
        assert_eq!(
            tokens.principal(&risk_trading),
            Some(Principal {
                role: Role::Risk,
                account: Some(8)
            })
        );
        // A role nobody knows is no identity at all, and a trader needs an account.
        let unknown = key.sign(&serde_json::json!({"role": "root", "sub": "8", "exp": exp}));
        assert_eq!(tokens.principal(&unknown), None);
        let no_sub = key.sign(&serde_json::json!({"role": "trader", "exp": exp}));
        assert_eq!(tokens.principal(&no_sub), None);
        assert!(Principal::trader(1).has(Role::Trader));
        assert!(!Principal::trader(1).has(Role::Risk));
        assert!(desk.has(Role::Risk) && !desk.has(Role::Admin));
    }

    #[test]
    fn grants_read_from_the_command_line() {
        assert_eq!(Principal::parse_grant("7"), Ok(Principal::trader(7)));
        assert_eq!(
            Principal::parse_grant("risk"),
            Ok(Principal {
                role: Role::Risk,
                account: None
            })
        );
        assert_eq!(
            Principal::parse_grant("admin:9"),
            Ok(Principal {
                role: Role::Admin,
                account: Some(9)
            })
        );
        for bad in ["0", "trader", "root", "risk:x", "admin:0", ""] {
            assert!(Principal::parse_grant(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_trader_token_without_an_account_is_refused() {
        let mut config = AuthConfig::default();
        config.tokens.insert(
            "t".into(),
            Principal {
                role: Role::Trader,
                account: None,
            },
        );
        assert_eq!(
            Tokens::new(&config).unwrap_err(),
            AuthConfigError::TraderWithoutAccount("t".into())
        );
    }
}
