//! `ticker-servers`: the gRPC and WebSocket fronts of tickerd and the `tickerd` binary.
//!
//! [`market`] runs the engine thread, the feeds thread and the simulator, and gives the fronts
//! one order-entry API; [`grpc`] and [`ws`] are the fronts on it, sharing [`auth`] (tokens to
//! roles and accounts), [`order_entry`] (requests checked and turned into engine commands) and
//! [`limits`] (pre-trade limits in decimals, and the table of those in force);
//! [`config`] is tickerd's configuration over the embedded [`defaults`]; [`metrics`] and
//! [`logging`] are what an operator watches. [`recovery`] rebuilds the market from the data
//! directory at start ([`shard_recovery`] a sharded market's), [`snapshot_writer`] writes
//! snapshots beside the journal, and
//! [`journal_tool`] is `tickerd journal verify | inspect | replay`. `reply_routing` hands each
//! caller its command's events, folded from every shard the command went to; `shard_merge`
//! makes one stream of a sharded market's shards for the views.

pub mod auth;
pub mod bus;
pub mod config;
pub mod defaults;
pub mod grpc;
pub mod journal_tool;
pub mod jwt;
pub mod limits;
pub mod logging;
pub mod market;
pub mod metrics;
pub mod order_entry;
pub mod recovery;
mod reply_routing;
mod shard_merge;
pub mod shard_recovery;
pub mod snapshot_writer;
#[cfg(test)]
mod test_outcomes;
pub mod ws;
