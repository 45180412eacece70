//! `tickerd`'s configuration: one struct per concern with documented defaults, loaded once from
//! four layers, each overriding the one before:
//!
//! 1. the embedded defaults ([`TickerdConfig::default`]);
//! 2. a TOML file (`--config PATH` or `TICKERD_CONFIG`); `tickerd.example.toml` at the workspace
//!    root lists every key with its default;
//! 3. environment variables `TICKERD_<SECTION>_<KEY>` (`TICKERD_GRPC_LISTEN=0.0.0.0:50051`);
//! 4. command-line flags (`--grpc-listen`, `--no-sim`, `--token`, and `--set section.key=value`
//!    for any key).
//!
//! The layers are merged as TOML values and deserialized once, so a bad value from any layer
//! gets the same kind of error: it names the key, the layer it came from and what was wrong
//! (`grpc.listen (from TICKERD_GRPC_LISTEN): invalid socket address syntax`).

mod convert;
mod layers;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use layers::{ConfigError, Layers};
pub use sections::*;
