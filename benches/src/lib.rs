//! `ticker-benches`: the `ticker-bench` tool and criterion benches of the core.
