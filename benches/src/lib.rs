//! `ticker-benches`: the `ticker-bench` load tool and the criterion benches of the core.
//!
//! - [`workload`] generates seeded command streams, entirely before anything is timed;
//!   [`rng`] is the tiny generator behind it.
//! - [`engine_load`] is `ticker-bench engine`: throughput and latency of the matching engine,
//!   called directly (`book` mode) or through the threaded pipeline ([`pipeline_load`]), on
//!   several operation mixes, beside a peer order book from crates.io ([`peer`]).
//! - [`report`] turns measurements into the one-line JSON reports the tool prints.
//! - [`load`] is `ticker-bench latency | throughput | fanout`: tickerd under load over gRPC
//!   and WebSocket, with latency percentiles, throughput, bytes per message and CPU time.
//! - [`soak`] is `ticker-bench soak`: tickerd as a child process under mixed load for as long
//!   as asked, RSS, fds, tasks, latency and slow-consumer counters every interval, and a verdict.
//!
//! `benches/book.rs` holds the criterion micro-benches of single book operations.
//!
//! ```sh
//! cargo run --release -p ticker-benches --bin ticker-bench -- engine --mode book
//! cargo bench -p ticker-benches --bench book
//! ```

pub mod catchup_load;
pub mod dropcopy_load;
pub mod engine_load;
pub mod journal_load;
pub mod load;
pub mod peer;
pub mod pipeline_load;
pub mod recovery_load;
pub mod report;
pub mod rng;
pub mod soak;
pub mod workload;
