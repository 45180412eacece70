//! The four layers (defaults, file, environment, flags), merged as TOML values and
//! deserialized once, so a bad value from any layer names its key and where it came from.

use super::*;
use crate::auth::{Principal, Role};
use std::collections::HashMap;
use toml::{Table, Value};

/// A configuration that cannot be used, naming the key, where its value came from and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{origin}: {reason}")]
    Syntax { origin: String, reason: String },
    #[error("{key} (from {origin}): {reason}")]
    Value {
        key: String,
        origin: String,
        reason: String,
    },
    #[error("{origin}: no config key {key}; the sections are {sections}")]
    UnknownKey {
        key: String,
        origin: String,
        sections: String,
    },
}

/// Collects the layers; [`Layers::finish`] validates them into a [`TickerdConfig`].
pub struct Layers {
    tree: Table,
    /// Where each key's value came from, for error messages ("grpc.listen" → "TICKERD_GRPC_LISTEN").
    origins: HashMap<String, String>,
}

impl Default for Layers {
    fn default() -> Self {
        Self::new()
    }
}

impl Layers {
    /// Starts from the embedded defaults.
    pub fn new() -> Self {
        let tree = match Value::try_from(TickerdConfig::default()) {
            Ok(Value::Table(t)) => t,
            // The defaults are plain structs of numbers, strings and maps: they always serialize.
            other => unreachable!("defaults serialize to a table, got {other:?}"),
        };
        Layers {
            tree,
            origins: HashMap::new(),
        }
    }

    /// Merges a TOML document (a config file's text); `origin` names it in errors.
    pub fn file(&mut self, origin: &str, text: &str) -> Result<&mut Self, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                origin: origin.to_string(),
                reason: e.to_string().trim_end().to_string(),
            })?;
        self.merge(String::new(), table, origin);
        Ok(self)
    }

    /// Reads and merges a config file.
    pub fn file_at(&mut self, path: &std::path::Path) -> Result<&mut Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.file(&path.display().to_string(), &text)
    }

    /// Applies `TICKERD_<SECTION>_<KEY>` variables (`TICKERD_CONFIG` names the file and is not
    /// a key).
    pub fn env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<&mut Self, ConfigError> {
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("TICKERD_") && k != "TICKERD_CONFIG")
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let rest = name["TICKERD_".len()..].to_ascii_lowercase();
            let section = self
                .tree
                .keys()
                .find(|s| rest.starts_with(&format!("{s}_")))
                .cloned();
            let Some(section) = section else {
                return Err(self.unknown_key(&rest, &name));
            };
            let key = format!("{section}.{}", &rest[section.len() + 1..]);
            self.set(&key, &raw, &name)?;
        }
        Ok(self)
    }

    /// Sets one key (`section.key`) from text, as `--set` and the environment do. The text is
    /// read as a TOML value when it is one (`true`, `42`, `{ alice = 1 }`) and as a string
    /// otherwise (`127.0.0.1:8080`).
    pub fn set(&mut self, key: &str, raw: &str, origin: &str) -> Result<&mut Self, ConfigError> {
        let Some((section, field)) = key.split_once('.') else {
            return Err(self.unknown_key(key, origin));
        };
        let Some(Value::Table(table)) = self.tree.get_mut(section) else {
            return Err(self.unknown_key(key, origin));
        };
        let value = format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_string()));
        table.insert(field.to_string(), value);
        self.origins.insert(key.to_string(), origin.to_string());
        Ok(self)
    }

    /// Adds one bearer token: `--token TOKEN=ACCOUNT` (a trader), `--token TOKEN=ROLE` or
    /// `--token TOKEN=ROLE:ACCOUNT`. The role is checked when the layers are finished.
    pub fn token(&mut self, spec: &str, origin: &str) -> Result<&mut Self, ConfigError> {
        let bad = |reason: String| ConfigError::Value {
            key: "auth.tokens".into(),
            origin: origin.to_string(),
            reason,
        };
        let (token, grant) = spec.split_once('=').ok_or_else(|| {
            bad(format!(
                "{spec:?} is not TOKEN=ACCOUNT or TOKEN=ROLE[:ACCOUNT]"
            ))
        })?;
        let principal = Principal::parse_grant(grant).map_err(bad)?;
        let value = match principal {
            Principal {
                role: Role::Trader,
                account: Some(account),
            } => Value::Integer(account as i64),
            Principal { role, account } => {
                let mut t = Table::new();
                t.insert("role".into(), Value::String(role.as_str().into()));
                if let Some(account) = account {
                    t.insert("account".into(), Value::Integer(account as i64));
                }
                Value::Table(t)
            }
        };
        if let Some(Value::Table(auth)) = self.tree.get_mut("auth") {
            let tokens = auth
                .entry("tokens")
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(tokens) = tokens {
                tokens.insert(token.to_string(), value);
            }
        }
        self.origins
            .insert("auth.tokens".to_string(), origin.to_string());
        Ok(self)
    }

    /// Validates the merged layers.
    pub fn finish(&self) -> Result<TickerdConfig, ConfigError> {
        let config: TickerdConfig =
            serde_path_to_error::deserialize(Value::Table(self.tree.clone())).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Value {
                    origin: self.origin_of(&key),
                    key,
                    reason: e.into_inner().to_string(),
                }
            })?;
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Value {
                origin: self.origin_of(key),
                key: key.to_string(),
                reason,
            })?;
        Ok(config)
    }

    /// The layer that set `key` or the nearest key above it ("defaults" if none did).
    fn origin_of(&self, key: &str) -> String {
        let mut k = key;
        loop {
            if let Some(o) = self.origins.get(k) {
                return o.clone();
            }
            match k.rsplit_once('.') {
                Some((up, _)) => k = up,
                None => return "defaults".into(),
            }
        }
    }

    fn merge(&mut self, prefix: String, table: Table, origin: &str) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let target = lookup_mut(&mut self.tree, &prefix);
            match (target.get_mut(&k), v) {
                // Sections merge key by key; any other value (tokens included) replaces.
                (Some(Value::Table(_)), Value::Table(inner)) if prefix.is_empty() => {
                    self.origins.insert(key.clone(), origin.to_string());
                    self.merge(key, inner, origin);
                }
                (_, v) => {
                    target.insert(k, v);
                    self.origins.insert(key, origin.to_string());
                }
            }
        }
    }

    fn unknown_key(&self, key: &str, origin: &str) -> ConfigError {
        ConfigError::UnknownKey {
            key: key.to_string(),
            origin: origin.to_string(),
            sections: self.tree.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

fn lookup_mut<'a>(tree: &'a mut Table, path: &str) -> &'a mut Table {
    if path.is_empty() {
        return tree;
    }
    match tree.get_mut(path) {
        Some(Value::Table(t)) => t,
        // merge() only descends into sections that exist as tables.
        _ => unreachable!("section {path} is a table"),
    }
}
