//! Order entry shared by every front (gRPC and WebSocket): a request's fields, already read
//! from its wire format, checked and turned into an engine command, with every bad field named.
//!
//! Prices and sizes arrive as decimal strings and become ticks and lots here, exactly or not at
//! all: `"65000.001"` on a 0.01 tick is refused with a violation naming `price`, never rounded.
//! Every bad field of a request is reported at once, so a client fixes them in one go. The
//! fronts read their own enums (protobuf numbers, JSON strings) and add violations for those to
//! the same [`Violations`] before calling in, so both report the same fields the same way.

use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;
use ticker_engine::*;
use ticker_feeds::orders::Accounts;
use ticker_feeds::{Instruments, WireInstrument};

/// A request whose fields are wrong: not sent to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `invalid request: bad price, size`.
    pub message: String,
    /// `(field, description)` for each bad field, in the order the fields were checked.
    pub violations: Vec<(String, String)>,
}

/// The bad fields of one request, collected so all are reported together — up to
/// [`MAX_LISTED`] of them, each field name cut like [`shortened`], so that however many bad
/// (or unknown, client-named) fields a request has, its error stays short.
#[derive(Debug, Default)]
pub struct Violations {
    listed: Vec<(String, String)>,
    /// Violations beyond the listed ones, counted only.
    more: usize,
}

/// Violations an error lists at most.
pub const MAX_LISTED: usize = 16;

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.listed.len() == MAX_LISTED {
            self.more += 1;
            return;
        }
        let field = field.into();
        let field = match shortened(&field) {
            std::borrow::Cow::Borrowed(_) => field,
            std::borrow::Cow::Owned(cut) => cut,
        };
        self.listed.push((field, description.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// Whether `field` was already found bad.
    pub fn has(&self, field: &str) -> bool {
        self.listed.iter().any(|(f, _)| f == field)
    }

    /// `Ok(value)` when no field was bad.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Invalid> {
        if self.listed.is_empty() {
            return Ok(value());
        }
        let fields: Vec<&str> = self.listed.iter().map(|(f, _)| f.as_str()).collect();
        let more = match self.more {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        Err(Invalid {
            message: format!("invalid request: bad {}{more}", fields.join(", ")),
            violations: self.listed,
        })
    }
}

/// Digits a decimal on the wire may have: what `rust_decimal` holds exactly.
const MAX_DIGITS: usize = 28;

/// Parses a decimal string; `None` (with a violation) when it is not one.
pub fn decimal(field: &str, text: &str, v: &mut Violations) -> Option<Decimal> {
    // A field the front already found bad (a number where a string belongs) is not judged
    // again as an empty decimal.
    if v.has(field) {
        return None;
    }
    // rust_decimal rounds digits beyond its 28 significant ones, which would turn an off-grid
    // value into an on-grid one: longer numbers are refused instead.
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if digits > MAX_DIGITS {
        v.add(
            field,
            format!("{} has more than {MAX_DIGITS} digits", quote(text)),
        );
        return None;
    }
    // The one form venues take: digits, then optionally a point and more digits, with an
    // optional leading minus ("0.5"; not ".5", "5.", "+5", "5e3" or "1_000").
    match Decimal::from_str(text) {
        Ok(d) if well_formed(text) => Some(d),
        _ => {
            v.add(
                field,
                format!(
                    "{} is not a decimal number (digits with an optional fraction: \"0.5\", not \".5\" or \"5.\")",
                    quote(text)
                ),
            );
            None
        }
    }
}

/// `-?[0-9]+(\.[0-9]+)?`
fn well_formed(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// Characters of a client's value an error shows.
const SHOWN: usize = 64;

/// A client's value as an error message quotes it: at most its first 64 characters and its
/// length, so a huge value never makes a huge error (gRPC clients refuse trailers over 16 KiB).
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// A client's value where it names something in a field path (`instruments[BTC-USD]`):
/// unquoted, and cut like [`quote`] when long.
pub fn shortened(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(SHOWN) {
        None => text.into(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()).into(),
    }
}

/// A price in ticks of `wire`'s tick size.
pub fn price(wire: &WireInstrument, field: &str, text: &str, v: &mut Violations) -> Option<Ticks> {
    let d = decimal(field, text, v)?;
    let tick = wire.instrument.spec.tick_size;
    match wire.instrument.price_to_ticks(d) {
        Ok(t) => Some(t),
        Err(RejectReason::OffTick) => {
            v.add(
                field,
                format!(
                    "{text} is not a multiple of the tick size {tick} of {}",
                    wire.symbol()
                ),
            );
            None
        }
        Err(RejectReason::InvalidPrice) => {
            v.add(field, format!("{text} must be positive"));
            None
        }
        Err(_) => {
            v.add(field, format!("{text} is out of range"));
            None
        }
    }
}

/// A size in lots of `wire`'s lot size.
pub fn size(wire: &WireInstrument, field: &str, text: &str, v: &mut Violations) -> Option<Lots> {
    let d = decimal(field, text, v)?;
    let lot = wire.instrument.spec.lot_size;
    match wire.instrument.size_to_lots(d) {
        Ok(l) => Some(l),
        Err(RejectReason::OffLot) => {
            v.add(
                field,
                format!(
                    "{text} is not a multiple of the lot size {lot} of {}",
                    wire.symbol()
                ),
            );
            None
        }
        Err(RejectReason::InvalidSize) => {
            v.add(field, format!("{text} must be positive"));
            None
        }
        Err(_) => {
            v.add(field, format!("{text} is out of range"));
            None
        }
    }
}

/// An instrument by symbol.
pub fn instrument(
    instruments: &Instruments,
    field: &str,
    symbol: &str,
    v: &mut Violations,
) -> Option<Arc<WireInstrument>> {
    if symbol.is_empty() {
        v.add(field, "required: an instrument symbol such as \"BTC-USD\"");
        return None;
    }
    let found = instruments.by_symbol(symbol);
    if found.is_none() {
        v.add(field, format!("unknown instrument {}", quote(symbol)));
    }
    found
}

/// An order of an account: by engine id or by client id (one of them, not zero).
pub fn order_ref(order: Option<OrderRef>, v: &mut Violations) -> Option<OrderRef> {
    match order {
        None => v.add("order", "required: order_id or client_order_id"),
        Some(OrderRef::Id(OrderId(0))) => v.add("order_id", "must not be 0"),
        Some(OrderRef::Client(0)) => v.add("client_order_id", "must not be 0"),
        Some(r) => return Some(r),
    }
    None
}

/// A new order as a front read it: decimals still as text (empty when absent), enums already
/// read (`None` when absent or unreadable; the front has named unreadable ones).
#[derive(Debug, Clone, Default)]
pub struct PlaceTicket<'a> {
    pub instrument: &'a str,
    pub side: Option<Side>,
    /// `None`: a limit order.
    pub order_type: Option<OrderType>,
    pub price: &'a str,
    pub trigger_price: &'a str,
    pub size: &'a str,
    pub display_size: &'a str,
    /// `None`: GTC, or IOC for market and stop-market orders.
    pub time_in_force: Option<TimeInForce>,
    pub expiry_ns: u64,
    pub post_only: bool,
    /// `None`: cancel the taker.
    pub self_trade_prevention: Option<SelfTradePrevention>,
    pub client_order_id: u64,
}

/// A place command from a ticket; `v` holds what the front already found wrong.
pub fn place(
    t: &PlaceTicket<'_>,
    mut v: Violations,
    instruments: &Instruments,
    account: AccountId,
    session: SessionId,
) -> Result<Place, Invalid> {
    let wire = instrument(instruments, "instrument", t.instrument, &mut v);
    let order_type = t.order_type.unwrap_or(OrderType::Limit);
    let (mut price, mut trigger, mut size, mut display) = (0, 0, 0, 0);
    // Which prices an order needs depends on its type: with an unreadable type, say nothing.
    let known_type = !v.has("order_type");
    if let (Some(wire), true) = (&wire, known_type) {
        if order_type.has_limit_price() {
            price = self::price(wire, "price", t.price, &mut v).unwrap_or(0);
        } else if !t.price.is_empty() {
            v.add("price", "only limit and stop-limit orders have a price");
        }
        if order_type.is_stop() {
            trigger = self::price(wire, "trigger_price", t.trigger_price, &mut v).unwrap_or(0);
        } else if !t.trigger_price.is_empty() {
            v.add("trigger_price", "only stop orders have a trigger price");
        }
        size = self::size(wire, "size", t.size, &mut v).unwrap_or(0);
        if !t.display_size.is_empty() {
            display = self::size(wire, "display_size", t.display_size, &mut v).unwrap_or(0);
        }
    }
    let market_like = matches!(order_type, OrderType::Market | OrderType::StopMarket);
    let tif = match t.time_in_force {
        Some(tif) => tif,
        None if market_like => TimeInForce::Ioc,
        None => TimeInForce::Gtc,
    };
    if tif == TimeInForce::Gtd && t.expiry_ns == 0 {
        v.add("expiry_ns", "required with a GTD time in force");
    } else if tif != TimeInForce::Gtd && t.expiry_ns != 0 {
        v.add("expiry_ns", "only GTD orders have an expiry");
    }
    v.finish(|| Place {
        account,
        session,
        client_id: t.client_order_id,
        instrument: wire.as_ref().map_or(0, |w| w.id()),
        side: t.side.unwrap_or(Side::Buy),
        order_type,
        price,
        trigger,
        size,
        tif,
        expiry: t.expiry_ns,
        post_only: t.post_only,
        display,
        stp: t
            .self_trade_prevention
            .unwrap_or(SelfTradePrevention::CancelTaker),
    })
}

/// A cancel command; `order` as read by the front.
pub fn cancel(
    order: Option<OrderRef>,
    mut v: Violations,
    account: AccountId,
) -> Result<Cancel, Invalid> {
    let order = order_ref(order, &mut v);
    v.finish(|| Cancel {
        account,
        order: order.unwrap_or(OrderRef::Client(0)),
    })
}

/// A change to a live order as a front read it: decimals as text, `None` when absent.
#[derive(Debug, Clone, Default)]
pub struct AmendTicket<'a> {
    pub order: Option<OrderRef>,
    /// The order's instrument: the new decimals are read on its grid.
    pub instrument: &'a str,
    pub price: Option<&'a str>,
    pub size: Option<&'a str>,
    pub trigger_price: Option<&'a str>,
}

/// An amend command. Its decimals are converted on the grid of the order's instrument, which
/// the ticket names and which is checked against the account's open order when the feeds
/// know it (an amend of an order the feeds do not know goes to the engine, which answers
/// `unknown_order` or `not_owner`).
pub fn amend(
    t: &AmendTicket<'_>,
    mut v: Violations,
    account: AccountId,
    instruments: &Instruments,
    accounts: &Accounts,
) -> Result<Amend, Invalid> {
    let order = order_ref(t.order, &mut v);
    let changes = t.price.is_some() || t.size.is_some() || t.trigger_price.is_some();
    if !changes {
        v.add(
            "price",
            "an amend changes at least one of price, size and trigger_price",
        );
    }
    let wire = if changes {
        instrument(instruments, "instrument", t.instrument, &mut v)
    } else {
        None
    };
    if let (Some(order), Some(wire)) = (order, &wire) {
        if let Some(open) = accounts.open_order(account, order) {
            if open.info.instrument != wire.id() {
                let actual = instruments
                    .get(open.info.instrument)
                    .map_or_else(String::new, |w| w.symbol().to_string());
                v.add(
                    "instrument",
                    format!("the order is on {actual}, not {}", wire.symbol()),
                );
            }
        }
    }
    let (mut price, mut size, mut trigger) = (None, None, None);
    if let Some(wire) = &wire {
        price = t.price.and_then(|p| self::price(wire, "price", p, &mut v));
        size = t.size.and_then(|s| self::size(wire, "size", s, &mut v));
        trigger = t
            .trigger_price
            .and_then(|p| self::price(wire, "trigger_price", p, &mut v));
    }
    v.finish(|| Amend {
        account,
        order: order.unwrap_or(OrderRef::Client(0)),
        price,
        size,
        trigger,
    })
}

/// A mass cancel: the account's live orders, optionally of one instrument (empty: all)
/// and/or one side.
pub fn mass_cancel(
    instrument: &str,
    side: Option<Side>,
    mut v: Violations,
    account: AccountId,
    instruments: &Instruments,
) -> Result<MassCancel, Invalid> {
    let instrument = if instrument.is_empty() {
        None
    } else {
        self::instrument(instruments, "instrument", instrument, &mut v).map(|w| w.id())
    };
    v.finish(|| MassCancel {
        account,
        instrument,
        side,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruments() -> Instruments {
        crate::defaults::wire_instruments()
    }

    fn btc_limit<'a>(price: &'a str, size: &'a str) -> PlaceTicket<'a> {
        PlaceTicket {
            instrument: "BTC-USD",
            side: Some(Side::Buy),
            price,
            size,
            ..Default::default()
        }
    }

    #[test]
    fn decimals_take_one_form() {
        for good in ["0.5", "5", "65000.10", "-1.25", "007.50"] {
            let mut v = Violations::default();
            assert!(decimal("price", good, &mut v).is_some(), "{good}");
        }
        for bad in [
            ".5", "5.", "+5", "5e3", "1_000", "", "-", "-.5", "1.2.3", " 5", "0x10",
        ] {
            let mut v = Violations::default();
            assert!(decimal("price", bad, &mut v).is_none(), "{bad:?}");
            assert!(v.has("price"), "{bad:?} is named");
        }
    }

    #[test]
    fn a_huge_value_is_quoted_short() {
        let mut v = Violations::default();
        let digits = "9".repeat(20_000);
        assert!(decimal("price", &digits, &mut v).is_none());
        let symbol = "X".repeat(20_000);
        assert!(instrument(&instruments(), "instrument", &symbol, &mut v).is_none());
        let text = format!("{v:?}");
        assert!(text.len() < 1_000, "{} bytes: {text}", text.len());
        assert!(text.contains("(20000 bytes)"), "{text}");
        assert_eq!(shortened("BTC-USD"), "BTC-USD");
        // Client-named fields are cut, and a request with thousands of bad fields lists 16.
        let mut v = Violations::default();
        v.add("x".repeat(3000), "unknown field of subscribe");
        for i in 0..5000 {
            v.add(format!("f{i}"), "unknown field of subscribe");
        }
        let invalid = v.finish(|| ()).unwrap_err();
        assert_eq!(invalid.violations.len(), MAX_LISTED);
        assert!(invalid.violations[0].0.ends_with("… (3000 bytes)"));
        assert!(
            invalid.message.ends_with(", f14 and 4985 more"),
            "{}",
            invalid.message
        );
        assert!(invalid.message.len() < 1_000);
        let cut = shortened(&symbol);
        assert_eq!(cut, format!("{}… (20000 bytes)", "X".repeat(64)));
    }

    #[test]
    fn an_on_grid_limit_order_converts_exactly() {
        let t = btc_limit("65000.10", "0.25");
        let place = place(&t, Violations::default(), &instruments(), 7, 0).unwrap();
        assert_eq!((place.price, place.size), (6_500_010, 25_000));
        assert_eq!((place.account, place.tif), (7, TimeInForce::Gtc));
    }

    #[test]
    fn violations_found_by_the_front_come_first() {
        let mut v = Violations::default();
        v.add("side", "must be buy or sell");
        let t = btc_limit("65000.001", "0.000001");
        let invalid = place(&t, v, &instruments(), 7, 0).unwrap_err();
        let fields: Vec<&str> = invalid.violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["side", "price", "size"]);
        assert_eq!(invalid.message, "invalid request: bad side, price, size");
    }

    #[test]
    fn numbers_in_other_notations_are_not_decimals() {
        for bad in ["", "1e3", "+5", "1_000", " 5", "0x10", "5.0.0"] {
            let t = btc_limit(bad, "1");
            let invalid = place(&t, Violations::default(), &instruments(), 7, 0).unwrap_err();
            assert_eq!(invalid.violations[0].0, "price", "{bad:?}");
        }
        // 65000.01 followed by a 1 in the 29th digit: rounding would put it on the grid.
        let t = btc_limit("65000.010000000000000000000001", "1");
        let invalid = place(&t, Violations::default(), &instruments(), 7, 0).unwrap_err();
        assert!(invalid.violations[0].1.contains("more than 28 digits"));
    }

    #[test]
    fn gtd_needs_an_expiry_and_only_gtd_has_one() {
        let mut t = btc_limit("65000", "1");
        t.time_in_force = Some(TimeInForce::Gtd);
        let invalid = place(&t, Violations::default(), &instruments(), 7, 0).unwrap_err();
        assert_eq!(invalid.violations[0].0, "expiry_ns");
        t.time_in_force = None;
        t.expiry_ns = 5;
        let invalid = place(&t, Violations::default(), &instruments(), 7, 0).unwrap_err();
        assert_eq!(invalid.violations[0].0, "expiry_ns");
    }

    #[test]
    fn an_order_reference_is_required_and_not_zero() {
        for (order, field) in [
            (None, "order"),
            (Some(OrderRef::Id(OrderId(0))), "order_id"),
            (Some(OrderRef::Client(0)), "client_order_id"),
        ] {
            let invalid = cancel(order, Violations::default(), 7).unwrap_err();
            assert_eq!(invalid.violations[0].0, field);
        }
        let ok = cancel(Some(OrderRef::Client(4)), Violations::default(), 7).unwrap();
        assert_eq!(ok.order, OrderRef::Client(4));
    }

    #[test]
    fn an_amend_must_change_something_on_a_known_instrument() {
        let accounts = Accounts::new(Default::default(), Arc::new(instruments()));
        let t = AmendTicket {
            order: Some(OrderRef::Id(OrderId(9))),
            instrument: "BTC-USD",
            ..Default::default()
        };
        let invalid = amend(&t, Violations::default(), 7, &instruments(), &accounts).unwrap_err();
        assert_eq!(invalid.violations[0].0, "price");
        let t = AmendTicket {
            size: Some("0.5"),
            instrument: "NOPE",
            ..t
        };
        let invalid = amend(&t, Violations::default(), 7, &instruments(), &accounts).unwrap_err();
        assert_eq!(invalid.violations[0].0, "instrument");
    }
}
