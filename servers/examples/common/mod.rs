//! What the example servers share: the values of their flags and how they stop. Each example
//! includes this module with `mod common;` and uses the part it needs.
#![allow(dead_code)]

use clap::ValueEnum;
use std::collections::HashMap;
use ticker_servers::auth::Principal;
use ticker_servers::ws::deflate::{DeflateConfig, DeflateMode};
use tokio::io::AsyncReadExt;

/// One `--token TOKEN=ACCOUNT|ROLE[:ACCOUNT]`, read as tickerd's `--token` reads it: a bare
/// account is a trader of that account; a role is `trader`, `risk` or `admin`.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub token: String,
    pub principal: Principal,
}

impl std::str::FromStr for TokenGrant {
    type Err = String;

    fn from_str(spec: &str) -> Result<TokenGrant, String> {
        let (token, grant) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?} is not TOKEN=ACCOUNT or TOKEN=ROLE[:ACCOUNT]"))?;
        Ok(TokenGrant {
            token: token.to_string(),
            principal: Principal::parse_grant(grant)?,
        })
    }
}

/// The tokens of the `--token` flags, by token.
pub fn tokens(grants: Vec<TokenGrant>) -> HashMap<String, Principal> {
    grants.into_iter().map(|g| (g.token, g.principal)).collect()
}

/// permessage-deflate as a flag's value: a mode, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Deflate {
    /// Each message deflated once, without context takeover, for every client.
    Shared,
    /// Each connection keeps its own window across messages.
    PerConnection,
    /// Refuse permessage-deflate offers.
    Off,
}

impl Deflate {
    /// Sets `config` to this choice; the other fields keep their values.
    pub fn apply(self, config: &mut DeflateConfig) {
        match self {
            Deflate::Shared => config.mode = DeflateMode::Shared,
            Deflate::PerConnection => config.mode = DeflateMode::PerConnection,
            Deflate::Off => config.enabled = false,
        }
    }
}

/// Returns on Ctrl-C or at the end of standard input: a parent that dies closes our stdin, and
/// the server stops with it rather than linger.
pub async fn until_stopped() {
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 256];
    let stdin_closed = async {
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => {}
    }
}
