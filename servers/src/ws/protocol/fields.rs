//! Typed reads of a JSON object's fields, each bad one added to the violations by its path.

use crate::order_entry::Violations;
use serde_json::{Map, Value};

/// Typed reads of an object's fields, naming each bad one by its path.
pub(super) struct Fields<'a> {
    pub(super) obj: &'a Map<String, Value>,
    pub(super) prefix: String,
}

impl Fields<'_> {
    pub(super) fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(super) fn string(&self, key: &str, required: bool, v: &mut Violations) -> Option<String> {
        match self.obj.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) if !required => None,
            None | Some(Value::Null) => {
                v.add(self.path(key), "required");
                None
            }
            Some(Value::Number(_)) if key.contains("price") || key.contains("size") => {
                v.add(
                    self.path(key),
                    "must be a decimal string such as \"0.25\", not a JSON number",
                );
                None
            }
            Some(_) => {
                v.add(self.path(key), "must be a string");
                None
            }
        }
    }

    /// A non-negative integer, as a JSON integer or a string of digits (ids exceed 2^53).
    pub(super) fn integer(&self, key: &str, v: &mut Violations) -> Option<u64> {
        let value = self.obj.get(key)?;
        let parsed = match value {
            Value::Null => return None,
            Value::Number(n) => n.as_u64(),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            _ => None,
        };
        if parsed.is_none() {
            v.add(
                self.path(key),
                "must be a non-negative integer below 2^64 (a JSON integer or a string of digits)",
            );
        }
        parsed
    }

    pub(super) fn boolean(&self, key: &str, v: &mut Violations) -> Option<bool> {
        match self.obj.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            _ => {
                v.add(self.path(key), "must be true or false");
                None
            }
        }
    }

    pub(super) fn choice<T: Copy>(
        &self,
        key: &str,
        options: &[(&str, T)],
        required: bool,
        v: &mut Violations,
    ) -> Option<T> {
        let s = self.string(key, required, v)?;
        let found = options.iter().find(|(name, _)| *name == s).map(|(_, t)| *t);
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            v.add(
                self.path(key),
                format!("{s:?} is not one of {}", names.join(", ")),
            );
        }
        found
    }
}
