//! `ws::protocol::parse` (every client message of the WebSocket front) on arbitrary text never
//! panics, and whatever it refuses it refuses with a typed error whose message is not empty —
//! the client always learns what was wrong — and a few KB at most, however long the bad value.

use ticker_servers::ws::protocol::parse;

/// One input; panics on a property that does not hold.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // tungstenite hands the session only valid UTF-8 text messages.
        return;
    };
    let instruments = ticker_servers::defaults::wire_instruments();
    if let Err(e) = parse(text, &instruments, 64) {
        assert!(!e.message.is_empty(), "an error says what was wrong: {e:?}");
        let size = e.message.len()
            + e.fields
                .iter()
                .map(|(f, d)| f.len() + d.len())
                .sum::<usize>();
        // At most 16 violations, each a field cut to 64 characters (plus its length) and a
        // description quoting at most 64 characters of a value: about 6 KB at worst, however
        // large the message (up to 1 MiB) or however many fields it gets wrong.
        assert!(size < 8192, "a {size}-byte error");
    }
}
