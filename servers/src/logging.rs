//! `tracing` logs for the binaries: human-readable lines on stderr, filtered by `RUST_LOG`
//! (default `info` for tickerd's own crates, `warn` for the rest).

/// Installs the global subscriber; a second call (tests, examples) leaves the first in place.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,tickerd=info,ticker_servers=info")
    });
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}
