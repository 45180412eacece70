//! The protobuf encoding of every feed message (`ticker.v1` from `ticker-proto`), made once per
//! update beside the JSON one and shared by every gRPC subscriber. Field for field it carries
//! what the JSON carries; decimals are the same exact strings.
//!
//! The per-subscriber fields (`delivery`, `skipped`) are left unset here: the stream server
//! appends them (see `ticker_proto::frame`).

use crate::candles::{Candle, CandleSeries};
use crate::instruments::WireInstrument;
use crate::l3::{L3Book, L3Event};
use crate::ticker::TickerState;
use crate::topic::{Channel, Interval};
use bytes::Bytes;
use prost::Message as _;
use ticker_engine::*;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_message::Payload;

pub fn side(s: Side) -> pb::Side {
    match s {
        Side::Buy => pb::Side::Buy,
        Side::Sell => pb::Side::Sell,
    }
}

pub fn order_type(t: OrderType) -> pb::OrderType {
    match t {
        OrderType::Limit => pb::OrderType::Limit,
        OrderType::Market => pb::OrderType::Market,
        OrderType::StopMarket => pb::OrderType::StopMarket,
        OrderType::StopLimit => pb::OrderType::StopLimit,
    }
}

pub fn time_in_force(t: TimeInForce) -> pb::TimeInForce {
    match t {
        TimeInForce::Gtc => pb::TimeInForce::Gtc,
        TimeInForce::Ioc => pb::TimeInForce::Ioc,
        TimeInForce::Fok => pb::TimeInForce::Fok,
        TimeInForce::Gtd => pb::TimeInForce::Gtd,
    }
}

/// The proto enum uses the engine's own reason codes, so the mapping is the number.
pub fn reject_reason(r: RejectReason) -> pb::RejectReason {
    pb::RejectReason::try_from(r as u8 as i32).unwrap_or(pb::RejectReason::Unspecified)
}

pub fn done_reason(r: DoneReason) -> pb::DoneReason {
    match r {
        DoneReason::Filled => pb::DoneReason::Filled,
        DoneReason::Cancelled => pb::DoneReason::Cancelled,
        DoneReason::MassCancelled => pb::DoneReason::MassCancelled,
        DoneReason::SessionClosed => pb::DoneReason::SessionClosed,
        DoneReason::ImmediateOrCancel => pb::DoneReason::ImmediateOrCancel,
        DoneReason::MarketProtection => pb::DoneReason::MarketProtection,
        DoneReason::SelfTrade => pb::DoneReason::SelfTrade,
        DoneReason::Expired => pb::DoneReason::Expired,
        DoneReason::FillOrKill => pb::DoneReason::FillOrKill,
        DoneReason::AccountDisabled => pb::DoneReason::AccountDisabled,
    }
}

pub fn command_type(c: CommandTag) -> pb::CommandType {
    match c {
        CommandTag::Place => pb::CommandType::Place,
        CommandTag::Cancel => pb::CommandType::Cancel,
        CommandTag::Amend => pb::CommandType::Amend,
        CommandTag::MassCancel => pb::CommandType::MassCancel,
        CommandTag::SessionClosed => pb::CommandType::SessionClosed,
        _ => pb::CommandType::Unspecified,
    }
}

pub fn channel(c: Channel) -> (pb::Channel, pb::CandleInterval) {
    match c {
        Channel::Ticker => (pb::Channel::Ticker, pb::CandleInterval::Unspecified),
        Channel::Depth => (pb::Channel::Depth, pb::CandleInterval::Unspecified),
        Channel::Trades => (pb::Channel::Trades, pb::CandleInterval::Unspecified),
        Channel::Candles(i) => (pb::Channel::Candles, interval(i)),
        Channel::L3 => (pb::Channel::L3, pb::CandleInterval::Unspecified),
    }
}

pub fn interval(i: Interval) -> pb::CandleInterval {
    match i {
        Interval::S1 => pb::CandleInterval::CandleInterval1s,
        Interval::M1 => pb::CandleInterval::CandleInterval1m,
        Interval::H1 => pb::CandleInterval::CandleInterval1h,
    }
}

pub fn price(wire: &WireInstrument, ticks: Ticks) -> String {
    wire.price.to_string(ticks)
}

pub fn size(wire: &WireInstrument, lots: Lots) -> String {
    wire.size.to_string(lots as i64)
}

/// A market-data message of one topic.
pub fn market(
    wire: &WireInstrument,
    channel: Channel,
    seq: u64,
    prev_seq: u64,
    ts: Timestamp,
    payload: Payload,
) -> Bytes {
    let (channel, candle_interval) = self::channel(channel);
    Bytes::from(
        pb::MarketDataMessage {
            instrument: wire.symbol().to_string(),
            channel: channel as i32,
            candle_interval: candle_interval as i32,
            seq,
            prev_seq,
            timestamp_ns: ts,
            payload: Some(payload),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

pub fn ticker(wire: &WireInstrument, t: &TickerState) -> Payload {
    let p = |ticks: Option<Ticks>| ticks.map(|x| price(wire, x));
    let s = |lots: Option<Lots>| lots.map(|x| size(wire, x));
    Payload::Ticker(pb::Ticker {
        bid: p(t.bid.map(|l| l.0)),
        bid_size: s(t.bid.map(|l| l.1)),
        ask: p(t.ask.map(|l| l.0)),
        ask_size: s(t.ask.map(|l| l.1)),
        last: p(t.last.map(|l| l.0)),
        last_size: s(t.last.map(|l| l.1)),
        open_24h: p(t.stats.map(|x| x.open)),
        high_24h: p(t.stats.map(|x| x.high)),
        low_24h: p(t.stats.map(|x| x.low)),
        volume_24h: s(t.stats.map(|x| x.volume)),
        change_24h: p(t.stats.map(|x| x.change())),
        status: if t.halted {
            pb::TradingStatus::Halted
        } else {
            pb::TradingStatus::Trading
        } as i32,
    })
}

pub fn depth(
    wire: &WireInstrument,
    snapshot: bool,
    bids: &[(Ticks, Lots)],
    asks: &[(Ticks, Lots)],
    checksum: u32,
) -> Payload {
    let levels = |levels: &[(Ticks, Lots)]| {
        levels
            .iter()
            .map(|&(p, s)| pb::Level {
                price: price(wire, p),
                size: size(wire, s),
            })
            .collect()
    };
    Payload::Depth(pb::Depth {
        snapshot,
        bids: levels(bids),
        asks: levels(asks),
        checksum,
    })
}

pub fn trade(wire: &WireInstrument, trade_id: u64, p: Ticks, s: Lots, aggressor: Side) -> Payload {
    Payload::Trade(pb::Trade {
        trade_id,
        price: price(wire, p),
        size: size(wire, s),
        side: side(aggressor) as i32,
    })
}

fn candle_msg(wire: &WireInstrument, c: &Candle) -> pb::Candle {
    pb::Candle {
        start_ns: c.start,
        open: price(wire, c.open),
        high: price(wire, c.high),
        low: price(wire, c.low),
        close: price(wire, c.close),
        volume: size(wire, c.volume),
        trades: c.trades,
        closed: c.closed,
    }
}

pub fn candle(wire: &WireInstrument, c: &Candle) -> Payload {
    Payload::Candle(candle_msg(wire, c))
}

pub fn candles(wire: &WireInstrument, series: &CandleSeries) -> Payload {
    Payload::Candles(pb::Candles {
        candles: series.recent().map(|c| candle_msg(wire, &c)).collect(),
    })
}

pub fn l3(wire: &WireInstrument, e: &L3Event) -> Payload {
    let mut m = pb::L3Event::default();
    match *e {
        L3Event::Add {
            order_id,
            side: s,
            price: p,
            size: z,
        } => {
            m.set_event(pb::L3EventType::Add);
            m.order_id = order_id.0;
            m.set_side(side(s));
            m.price = price(wire, p);
            m.size = size(wire, z);
        }
        L3Event::Amend { order_id, size: z } => {
            m.set_event(pb::L3EventType::Amend);
            m.order_id = order_id.0;
            m.size = size(wire, z);
        }
        L3Event::Match {
            order_id,
            price: p,
            size: z,
            trade_id,
        } => {
            m.set_event(pb::L3EventType::Match);
            m.order_id = order_id.0;
            m.price = price(wire, p);
            m.size = size(wire, z);
            m.trade_id = trade_id;
        }
        L3Event::Delete { order_id, reason } => {
            m.set_event(pb::L3EventType::Delete);
            m.order_id = order_id.0;
            m.reason = reason.to_string();
        }
    }
    Payload::L3(m)
}

pub fn l3_book(wire: &WireInstrument, book: &L3Book) -> Payload {
    let side_orders = |s: Side| {
        book.orders(s)
            .into_iter()
            .map(|(id, p, z)| pb::L3Order {
                order_id: id.0,
                price: price(wire, p),
                size: size(wire, z),
            })
            .collect()
    };
    Payload::L3Book(pb::L3Book {
        bids: side_orders(Side::Buy),
        asks: side_orders(Side::Sell),
    })
}

/// An order as accepted.
pub fn order(wire: &WireInstrument, i: &OrderInfo) -> pb::Order {
    pb::Order {
        order_id: i.order_id.0,
        client_order_id: i.client_id,
        instrument: wire.symbol().to_string(),
        side: side(i.side) as i32,
        order_type: order_type(i.order_type) as i32,
        price: if i.order_type.has_limit_price() {
            price(wire, i.price)
        } else {
            String::new()
        },
        trigger_price: if i.order_type.is_stop() {
            price(wire, i.trigger)
        } else {
            String::new()
        },
        size: size(wire, i.size),
        time_in_force: time_in_force(i.tif) as i32,
        expiry_ns: if i.tif == TimeInForce::Gtd {
            i.expiry
        } else {
            0
        },
        post_only: i.post_only,
        display_size: if i.display > 0 {
            size(wire, i.display)
        } else {
            String::new()
        },
    }
}

/// One order update: of an account's own stream (`account` 0) or of the drop copy.
pub fn order_update(
    seq: u64,
    prev_seq: u64,
    engine_seq: u64,
    ts: Timestamp,
    account: AccountId,
    event: pb::order_update::Event,
) -> Bytes {
    Bytes::from(
        pb::OrderUpdate {
            seq,
            prev_seq,
            engine_seq,
            timestamp_ns: ts,
            account,
            event: Some(event),
            delivery: 0,
        }
        .encode_to_vec(),
    )
}
