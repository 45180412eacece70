//! `negotiate` on arbitrary `Sec-WebSocket-Extensions` lines never panics; what it accepts is
//! within range, honours the configured window, and is an answer the client side accepts as
//! the same parameters.

use ticker_servers::ws::deflate::{
    negotiate, DeflateConfig, DeflateMode, MessageDeflater, MessageInflater, Negotiated,
};

/// One input; panics on a property that does not hold.
pub fn run(data: &[u8]) {
    // Header values are bytes; the handshake reads them lossily, as here (non-ASCII becomes
    // U+FFFD, which the grammar rejects).
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    for mode in [DeflateMode::Shared, DeflateMode::PerConnection] {
        for server_max_window_bits in [9, 12, 15] {
            let config = DeflateConfig {
                mode,
                server_max_window_bits,
                ..DeflateConfig::default()
            };
            let Ok(Some(n)) = negotiate(&lines, &config) else {
                continue;
            };
            assert!((8..=15).contains(&n.server_window_bits()), "{n:?}");
            assert!(n.server_window_bits() <= server_max_window_bits, "{n:?}");
            assert!((8..=15).contains(&n.client_window_bits()), "{n:?}");
            if mode == DeflateMode::Shared {
                assert!(n.server_no_context_takeover);
            }
            let answer = n.response_header();
            assert!(http::HeaderValue::from_str(&answer).is_ok(), "{answer:?}");
            let client = Negotiated::from_answer(&[&answer], &lines, &config)
                .unwrap_or_else(|e| panic!("own answer {answer:?} refused: {e}"))
                .expect("an answer");
            assert_eq!(client.server_max_window_bits, n.server_max_window_bits);
            assert_eq!(client.client_max_window_bits, n.client_max_window_bits);
            assert_eq!(
                client.server_no_context_takeover,
                n.server_no_context_takeover
            );
            assert_eq!(
                client.client_no_context_takeover,
                n.client_no_context_takeover
            );
            // Every accepted window builds a working compressor pair.
            let mut deflater = MessageDeflater::for_server(&n);
            let mut inflater = MessageInflater::for_client(&n);
            let payload = deflater.compress(data);
            assert_eq!(inflater.inflate_message(&payload).as_deref(), Ok(data));
        }
    }
}
