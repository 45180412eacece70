//! permessage-deflate negotiation (RFC 7692 §5, §7.1): from the client's offers to the
//! parameters both sides compress with, and the server's answer.
//!
//! The server walks the offers in the client's order of preference and accepts the first it
//! can honour. An offer is declined (the next one is tried) when it has a parameter RFC 7692
//! does not define for an offer, a parameter twice, or a value out of its grammar; a header
//! that breaks the RFC 6455 grammar fails the whole handshake (400). Other extensions are
//! ignored.
//!
//! What is answered, per parameter of the accepted offer:
//! - `server_no_context_takeover`: echoed when offered (then honoured), and always announced in
//!   [`DeflateMode::Shared`], where no message refers to an earlier one anyway.
//! - `client_no_context_takeover`: echoed when offered, so the server may reset its inflater
//!   after every message.
//! - `server_max_window_bits=N`: answered with `min(N, config)`; when not offered, the
//!   configured window is announced only if it is below 15 (§7.1.2.1 lets the server include
//!   the parameter in any answer).
//! - `client_max_window_bits[=N]`: echoed with its value when it has one (the client will use
//!   at most N); without a value the client keeps 15 and nothing is answered. Never answered
//!   when not offered (§7.1.2.2).
//!
//! The 8-bit window. zlib's raw deflate cannot compress with a 256-byte window, and answering
//! 9 to an offer of 8 would break the RFC (the answer must be "the same or smaller", §7.1.2.1).
//! An offer of `server_max_window_bits=8` is honoured exactly instead: the server writes deflate
//! *stored* blocks for that connection (valid deflate that refers to no earlier byte at all),
//! so the answer is 8 and the client's inflater is never surprised. As that buys framing and
//! no compression, such an offer is accepted only if no later offer can be honoured with a
//! real window. Inflating is unaffected: a larger inflate window reads any smaller one, so a
//! client window of 8 is inflated with 9.

use super::config::{DeflateConfig, DeflateMode};
use super::extensions::{parse_extensions, ExtensionOffer, ExtensionsError};
use std::fmt::Write as _;

/// The extension token of RFC 7692.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// A `Sec-WebSocket-Extensions` header that does not parse: the handshake answers 400.
pub type OfferError = ExtensionsError;

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// The permessage-deflate parameters in force on one connection, as answered by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's window as answered; `None` = not in the answer, i.e. 15.
    pub server_max_window_bits: Option<u8>,
    /// The client's window as answered; `None` = not in the answer, i.e. 15.
    pub client_max_window_bits: Option<u8>,
    /// How the server compresses (ignored by a client).
    pub mode: DeflateMode,
    /// zlib level of this side's per-connection compressor.
    pub level: u32,
    /// Cap on the inflated size of one incoming message.
    pub max_inflated_message: usize,
}

/// Why one permessage-deflate offer was declined (the next one is tried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Decline {
    #[error("parameter {0:?} is not defined for permessage-deflate")]
    UnknownParam(String),
    #[error("parameter {0:?} appears more than once")]
    DuplicateParam(String),
    #[error("parameter {param:?} has an invalid value {value:?}")]
    InvalidValue {
        param: String,
        value: Option<String>,
    },
}

/// A permessage-deflate answer a client cannot accept (the client fails the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Malformed(#[from] ExtensionsError),
    #[error("the server answered extension {0:?}, which was not offered")]
    UnexpectedExtension(String),
    #[error("the server answered permessage-deflate more than once")]
    Repeated,
    #[error("invalid permessage-deflate answer: {0}")]
    InvalidParams(Decline),
    #[error("the server answered client_max_window_bits, which the offer did not include")]
    UnofferedClientWindow,
    #[error("the server answered server_max_window_bits={answered} above the offered {offered}")]
    ServerWindowAboveOffer { answered: u8, offered: u8 },
    #[error("the server answered client_max_window_bits without a value")]
    ClientWindowWithoutValue,
}

/// `server_max_window_bits` and `client_max_window_bits` values: 1*DIGIT without leading
/// zeros, 8..=15 (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    // `parse` alone would take a leading '+'.
    if value.is_empty()
        || value.len() > 2
        || value.starts_with('0')
        || !value.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// The parameters of one permessage-deflate offer or answer, validated.
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    fn parse(offer: &ExtensionOffer) -> Result<Self, Decline> {
        let mut params = Params::default();
        let mut seen = [false; 4];
        for p in &offer.params {
            let invalid = || Decline::InvalidValue {
                param: p.name.clone(),
                value: p.value.clone(),
            };
            let name = p.name.to_ascii_lowercase();
            let index = match name.as_str() {
                SERVER_NO_CONTEXT_TAKEOVER => 0,
                CLIENT_NO_CONTEXT_TAKEOVER => 1,
                SERVER_MAX_WINDOW_BITS => 2,
                CLIENT_MAX_WINDOW_BITS => 3,
                _ => return Err(Decline::UnknownParam(p.name.clone())),
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(Decline::DuplicateParam(p.name.clone()));
            }
            match index {
                0 | 1 if p.value.is_some() => return Err(invalid()),
                0 => params.server_no_context_takeover = true,
                1 => params.client_no_context_takeover = true,
                2 => {
                    let bits = p
                        .value
                        .as_deref()
                        .and_then(window_bits)
                        .ok_or_else(invalid)?;
                    params.server_max_window_bits = Some(bits);
                }
                _ => {
                    let bits = match p.value.as_deref() {
                        None => None,
                        Some(v) => Some(window_bits(v).ok_or_else(invalid)?),
                    };
                    params.client_max_window_bits = Some(bits);
                }
            }
        }
        Ok(params)
    }
}

/// Decides on the client's `Sec-WebSocket-Extensions` header lines: `Ok(None)` declines
/// permessage-deflate (no offer, none that can be honoured, or disabled), `Ok(Some)` is the
/// accepted configuration whose [`Negotiated::response_header`] goes in the 101 answer.
pub fn negotiate(
    offer_header_values: &[&str],
    config: &DeflateConfig,
) -> Result<Option<Negotiated>, OfferError> {
    if !config.enabled {
        return Ok(None);
    }
    let offers = parse_extensions(offer_header_values)?;
    let mut stored_only = None;
    for offer in offers
        .iter()
        .filter(|o| o.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
    {
        let Ok(accepted) = accept_offer(offer, config) else {
            continue;
        };
        if accepted.server_window_bits() >= 9 {
            return Ok(Some(accepted));
        }
        stored_only.get_or_insert(accepted);
    }
    Ok(stored_only)
}

/// The server's answer to one permessage-deflate offer, or why it declines it.
pub fn accept_offer(offer: &ExtensionOffer, config: &DeflateConfig) -> Result<Negotiated, Decline> {
    let params = Params::parse(offer)?;
    let server_max_window_bits = match params.server_max_window_bits {
        Some(offered) => Some(offered.min(config.server_max_window_bits)),
        None => (config.server_max_window_bits < 15).then_some(config.server_max_window_bits),
    };
    Ok(Negotiated {
        server_no_context_takeover: params.server_no_context_takeover
            || config.mode == DeflateMode::Shared,
        client_no_context_takeover: params.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits: params.client_max_window_bits.flatten(),
        mode: config.mode,
        level: config.level,
        max_inflated_message: config.max_inflated_message,
    })
}

impl Negotiated {
    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub fn response_header(&self) -> String {
        let mut header = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            header.push_str("; ");
            header.push_str(SERVER_NO_CONTEXT_TAKEOVER);
        }
        if self.client_no_context_takeover {
            header.push_str("; ");
            header.push_str(CLIENT_NO_CONTEXT_TAKEOVER);
        }
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(header, "; {SERVER_MAX_WINDOW_BITS}={bits}");
        }
        if let Some(bits) = self.client_max_window_bits {
            let _ = write!(header, "; {CLIENT_MAX_WINDOW_BITS}={bits}");
        }
        header
    }

    /// The window the server compresses with (8..=15; 8 means stored blocks).
    pub fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// The window the client compresses with (8..=15).
    pub fn client_window_bits(&self) -> u8 {
        self.client_max_window_bits.unwrap_or(15)
    }

    /// Whether the server writes the shared payload ([`super::deflate_shared`], 15-bit window,
    /// no context takeover) to this connection rather than compressing for it alone: only in
    /// shared mode and when the client left the server a 15-bit window.
    pub fn uses_shared_payload(&self) -> bool {
        self.mode == DeflateMode::Shared && self.server_window_bits() == 15
    }

    /// Client side: the parameters in force from the server's answer to `offer_header_values`
    /// (`Ok(None)` when the server declined every extension). `config` gives this side's level
    /// and inflate cap.
    pub fn from_answer(
        answer_header_values: &[&str],
        offer_header_values: &[&str],
        config: &DeflateConfig,
    ) -> Result<Option<Negotiated>, AnswerError> {
        let answers = parse_extensions(answer_header_values)?;
        let Some(answer) = answers.first() else {
            return Ok(None);
        };
        if let Some(other) = answers
            .iter()
            .find(|a| !a.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        {
            return Err(AnswerError::UnexpectedExtension(other.name.clone()));
        }
        if answers.len() > 1 {
            return Err(AnswerError::Repeated);
        }
        let params = Params::parse(answer).map_err(AnswerError::InvalidParams)?;
        // The answer accepts one of our offers; it may lower values but not raise them or add
        // what no offer allowed.
        let offers = parse_extensions(offer_header_values)?;
        let offered: Vec<Params> = offers
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
            .filter_map(|o| Params::parse(o).ok())
            .collect();
        if offered.is_empty() {
            return Err(AnswerError::UnexpectedExtension(answer.name.clone()));
        }
        let client_max_window_bits = match params.client_max_window_bits {
            None => None,
            Some(None) => return Err(AnswerError::ClientWindowWithoutValue),
            Some(Some(bits)) => {
                if !offered.iter().any(|o| o.client_max_window_bits.is_some()) {
                    return Err(AnswerError::UnofferedClientWindow);
                }
                Some(bits)
            }
        };
        if let Some(answered) = params.server_max_window_bits {
            // Every offer that limited the server's window must be exceeded for this to be
            // wrong: the server may have accepted an offer without the limit.
            let most = offered
                .iter()
                .map(|o| o.server_max_window_bits.unwrap_or(15))
                .max();
            if let Some(offered) = most.filter(|&m| answered > m) {
                return Err(AnswerError::ServerWindowAboveOffer { answered, offered });
            }
        }
        Ok(Some(Negotiated {
            server_no_context_takeover: params.server_no_context_takeover,
            client_no_context_takeover: params.client_no_context_takeover,
            server_max_window_bits: params.server_max_window_bits,
            client_max_window_bits,
            mode: config.mode,
            level: config.level,
            max_inflated_message: config.max_inflated_message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> DeflateConfig {
        DeflateConfig::default()
    }

    fn per_connection() -> DeflateConfig {
        DeflateConfig {
            mode: DeflateMode::PerConnection,
            ..DeflateConfig::default()
        }
    }

    /// The answer header for `offer`, or `None` when declined.
    fn answer(offer: &[&str], config: &DeflateConfig) -> Option<String> {
        negotiate(offer, config)
            .unwrap()
            .map(|n| n.response_header())
    }

    #[test]
    fn plain_offer_is_accepted_with_context_takeover_per_connection() {
        assert_eq!(
            answer(&["permessage-deflate"], &per_connection()).as_deref(),
            Some("permessage-deflate")
        );
        let n = negotiate(&["permessage-deflate"], &per_connection())
            .unwrap()
            .unwrap();
        assert!(!n.server_no_context_takeover && !n.uses_shared_payload());
        assert_eq!((n.server_window_bits(), n.client_window_bits()), (15, 15));
    }

    #[test]
    fn shared_mode_announces_server_no_context_takeover_and_uses_the_shared_payload() {
        let n = negotiate(&["permessage-deflate"], &shared())
            .unwrap()
            .unwrap();
        assert_eq!(
            n.response_header(),
            "permessage-deflate; server_no_context_takeover"
        );
        assert!(n.uses_shared_payload());
    }

    #[test]
    fn browser_offer_gets_no_client_window_in_the_answer() {
        // Chrome and Firefox send exactly this.
        let offer = ["permessage-deflate; client_max_window_bits"];
        assert_eq!(
            answer(&offer, &per_connection()).as_deref(),
            Some("permessage-deflate")
        );
    }

    #[test]
    fn every_offered_parameter_is_honoured_and_echoed() {
        let offer = [
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                      server_max_window_bits=10; client_max_window_bits=12",
        ];
        assert_eq!(
            answer(&offer, &per_connection()).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=12"
            )
        );
        let n = negotiate(&offer, &shared()).unwrap().unwrap();
        assert_eq!((n.server_window_bits(), n.client_window_bits()), (10, 12));
        // A 10-bit window cannot be served the 15-bit shared payload.
        assert!(!n.uses_shared_payload());
    }

    #[test]
    fn server_window_is_the_smaller_of_offer_and_config() {
        let config = DeflateConfig {
            server_max_window_bits: 11,
            ..per_connection()
        };
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=13"], &config).as_deref(),
            Some("permessage-deflate; server_max_window_bits=11")
        );
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=9"], &config).as_deref(),
            Some("permessage-deflate; server_max_window_bits=9")
        );
        // Not offered: a configured window below 15 is announced anyway (§7.1.2.1 allows it).
        assert_eq!(
            answer(&["permessage-deflate"], &config).as_deref(),
            Some("permessage-deflate; server_max_window_bits=11")
        );
    }

    #[test]
    fn quoted_values_are_unescaped() {
        assert_eq!(
            answer(
                &["permessage-deflate; server_max_window_bits=\"10\""],
                &per_connection()
            )
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(
            answer(
                &["PerMessage-Deflate; Server_No_Context_Takeover"],
                &per_connection()
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
    }

    #[test]
    fn first_acceptable_offer_wins_and_other_extensions_are_ignored() {
        let offer = [
            "x-webkit-deflate-frame; max_window_bits=10",
            "permessage-deflate; server_max_window_bits=12, permessage-deflate",
        ];
        assert_eq!(
            answer(&offer, &per_connection()).as_deref(),
            Some("permessage-deflate; server_max_window_bits=12")
        );
    }

    #[test]
    fn only_other_extensions_means_no_extension() {
        assert_eq!(
            answer(&["x-webkit-deflate-frame, foo; bar"], &shared()),
            None
        );
        assert_eq!(answer(&[], &shared()), None);
    }

    #[test]
    fn disabled_config_declines_everything() {
        let config = DeflateConfig {
            enabled: false,
            ..shared()
        };
        assert_eq!(answer(&["permessage-deflate"], &config), None);
    }

    fn decline(offer: &str) -> Decline {
        let offers = parse_extensions(&[offer]).unwrap();
        accept_offer(&offers[0], &per_connection()).unwrap_err()
    }

    #[test]
    fn offers_with_unknown_duplicate_or_invalid_parameters_are_declined() {
        assert_eq!(
            decline("permessage-deflate; foo"),
            Decline::UnknownParam("foo".into())
        );
        // `max_window_bits` belongs to the older x-webkit-deflate-frame, not to RFC 7692.
        assert_eq!(
            decline("permessage-deflate; max_window_bits=10"),
            Decline::UnknownParam("max_window_bits".into())
        );
        assert_eq!(
            decline("permessage-deflate; client_max_window_bits; client_max_window_bits=10"),
            Decline::DuplicateParam("client_max_window_bits".into())
        );
        assert_eq!(
            decline("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
            Decline::DuplicateParam("server_no_context_takeover".into())
        );
        for bad in [
            "server_max_window_bits",
            "server_max_window_bits=7",
            "server_max_window_bits=16",
            "server_max_window_bits=010",
            "server_max_window_bits=0",
            "server_max_window_bits=+9",
            "server_max_window_bits=1000000000000000000009",
            "client_max_window_bits=7",
            "client_max_window_bits=abc",
            "server_no_context_takeover=1",
            "client_no_context_takeover=\"x\"",
        ] {
            assert!(
                matches!(
                    decline(&format!("permessage-deflate; {bad}")),
                    Decline::InvalidValue { .. }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn declined_offer_falls_through_to_the_next() {
        let offer = [
            "permessage-deflate; server_max_window_bits=16, permessage-deflate; foo, \
                      permessage-deflate; client_no_context_takeover",
        ];
        assert_eq!(
            answer(&offer, &per_connection()).as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
        let all_bad = ["permessage-deflate; foo, permessage-deflate; server_max_window_bits"];
        assert_eq!(answer(&all_bad, &per_connection()), None);
    }

    #[test]
    fn malformed_header_is_an_error_not_a_decline() {
        assert!(negotiate(
            &["permessage-deflate; server_max_window_bits=\"1"],
            &shared()
        )
        .is_err());
        assert!(negotiate(&["permessage-deflate;; x"], &shared()).is_err());
        // Even when a well-formed acceptable offer comes first.
        assert!(negotiate(&["permessage-deflate", "foo bar"], &shared()).is_err());
    }

    #[test]
    fn window_of_8_is_answered_8_and_only_when_nothing_better_is_offered() {
        let eight = "permessage-deflate; server_max_window_bits=8";
        assert_eq!(
            answer(&[eight], &per_connection()).as_deref(),
            Some("permessage-deflate; server_max_window_bits=8")
        );
        assert_eq!(
            answer(
                &[&format!(
                    "{eight}, permessage-deflate; server_max_window_bits=9"
                )],
                &per_connection()
            )
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=9")
        );
        // Two 8-bit offers: the first is taken.
        assert_eq!(
            answer(
                &[&format!("{eight}; client_no_context_takeover, {eight}")],
                &per_connection()
            )
            .as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=8")
        );
    }

    #[test]
    fn client_window_of_8_is_echoed() {
        let n = negotiate(
            &["permessage-deflate; client_max_window_bits=8"],
            &per_connection(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            n.response_header(),
            "permessage-deflate; client_max_window_bits=8"
        );
        assert_eq!(n.client_window_bits(), 8);
    }

    #[test]
    fn client_reads_the_answer_into_the_same_parameters() {
        let offer = ["permessage-deflate; client_max_window_bits; server_max_window_bits=12"];
        let server = negotiate(&offer, &shared()).unwrap().unwrap();
        let client =
            Negotiated::from_answer(&[&server.response_header()], &offer, &per_connection())
                .unwrap()
                .unwrap();
        assert_eq!(
            client.server_no_context_takeover,
            server.server_no_context_takeover
        );
        assert_eq!(client.server_max_window_bits, Some(12));
        assert_eq!(client.client_max_window_bits, None);
        assert_eq!(
            Negotiated::from_answer(&[], &offer, &per_connection()).unwrap(),
            None
        );
    }

    #[test]
    fn client_rejects_answers_the_offer_did_not_allow() {
        let plain = ["permessage-deflate"];
        let cfg = per_connection();
        assert_eq!(
            Negotiated::from_answer(
                &["permessage-deflate; client_max_window_bits=10"],
                &plain,
                &cfg
            ),
            Err(AnswerError::UnofferedClientWindow)
        );
        assert_eq!(
            Negotiated::from_answer(
                &["permessage-deflate; server_max_window_bits=12"],
                &["permessage-deflate; server_max_window_bits=10"],
                &cfg
            ),
            Err(AnswerError::ServerWindowAboveOffer {
                answered: 12,
                offered: 10
            })
        );
        assert_eq!(
            Negotiated::from_answer(
                &["permessage-deflate; client_max_window_bits"],
                &["permessage-deflate; client_max_window_bits"],
                &cfg
            ),
            Err(AnswerError::ClientWindowWithoutValue)
        );
        assert_eq!(
            Negotiated::from_answer(&["foo"], &plain, &cfg),
            Err(AnswerError::UnexpectedExtension("foo".into()))
        );
        assert_eq!(
            Negotiated::from_answer(&["permessage-deflate, permessage-deflate"], &plain, &cfg),
            Err(AnswerError::Repeated)
        );
        assert!(matches!(
            Negotiated::from_answer(&["permessage-deflate; bar"], &plain, &cfg),
            Err(AnswerError::InvalidParams(Decline::UnknownParam(_)))
        ));
    }
}
