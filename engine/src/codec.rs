//! A compact, versioned binary encoding of commands and events, for journals, recordings and
//! byte-exact determinism checks.
//!
//! Every integer is little-endian and fixed-width; every record starts with a one-byte tag.
//! `bool` is one byte (0 or 1); `Option<T>` is a presence byte then `T`; an `OrderId` is its
//! `u64`; a decimal is rust_decimal's 16-byte serialization; a symbol is a `u8` length then its
//! bytes. Enums (`Side`, `OrderType`, ...) are their `#[repr(u8)]` values. The field order of
//! each record is the field order of its Rust definition. Readers reject unknown tags and
//! truncated input with a [`CodecError`], never panic. A `u128` is 16 bytes little-endian;
//! [`Limits`] are `max_open_orders` and `max_orders_per_sec` (optional `u32`s), a `u32` count,
//! then per instrument its id (`u32`) and its four optional limits in field order.
//!
//! New commands and events get new tags and old ones never change, so version 1 readers of
//! this build read every stream an older build wrote; the risk commands (tags 10–12) and the
//! `AccountStatus` event (tag 12) were added that way.

use crate::command::*;
use crate::event::*;
use crate::instrument::InstrumentSpec;
use crate::risk::{InstrumentLimits, Limits};
use crate::types::*;
use rust_decimal::Decimal;
use std::sync::Arc;

/// Version of this encoding; bump on any change of layout.
pub const CODEC_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("input ends inside a record (needed {needed} more bytes at offset {offset})")]
    Truncated { offset: usize, needed: usize },
    #[error("unknown {what} tag {tag} at offset {offset}")]
    BadTag {
        what: &'static str,
        tag: u8,
        offset: usize,
    },
    #[error("symbol at offset {offset} is not UTF-8")]
    BadSymbol { offset: usize },
}

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    fn dec(&mut self, d: Decimal) {
        self.0.extend_from_slice(&d.serialize());
    }
    fn opt_u32(&mut self, v: Option<u32>) {
        self.bool(v.is_some());
        self.u32(v.unwrap_or(0));
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        self.bool(v.is_some());
        self.i64(v.unwrap_or(0));
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        self.bool(v.is_some());
        self.u64(v.unwrap_or(0));
    }
    fn opt_u128(&mut self, v: Option<u128>) {
        self.bool(v.is_some());
        self.0.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
    }
    fn limits(&mut self, l: &Limits) {
        self.opt_u32(l.max_open_orders);
        self.opt_u32(l.max_orders_per_sec);
        self.u32(l.instruments.len() as u32);
        for (id, i) in &l.instruments {
            self.u32(*id);
            self.opt_u64(i.max_order_lots);
            self.opt_u128(i.max_order_notional);
            self.opt_u64(i.max_long_lots);
            self.opt_u64(i.max_short_lots);
        }
    }
    fn spec(&mut self, s: &InstrumentSpec) {
        let sym = s.symbol.as_bytes();
        let len = sym.len().min(255);
        self.u8(len as u8);
        self.0.extend_from_slice(&sym[..len]);
        for d in [
            s.tick_size,
            s.lot_size,
            s.min_size,
            s.max_size,
            s.reference_price,
            s.band,
        ] {
            self.dec(d);
        }
    }
    fn order_ref(&mut self, r: OrderRef) {
        match r {
            OrderRef::Id(id) => {
                self.u8(0);
                self.u64(id.0);
            }
            OrderRef::Client(c) => {
                self.u8(1);
                self.u64(c);
            }
        }
    }
}

/// Bytes of one per-instrument entry of encoded [`Limits`].
const ENTRY: usize = 4 + 3 * 9 + 17;

struct R<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl R<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        if self.buf.len() - self.pos < n {
            return Err(CodecError::Truncated {
                offset: self.pos,
                needed: n - (self.buf.len() - self.pos),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bool(&mut self) -> Result<bool, CodecError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::BadTag {
                what: "bool",
                tag,
                offset: at,
            }),
        }
    }
    fn dec(&mut self) -> Result<Decimal, CodecError> {
        Ok(Decimal::deserialize(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }
    fn opt_u32(&mut self) -> Result<Option<u32>, CodecError> {
        let some = self.bool()?;
        let v = self.u32()?;
        Ok(some.then_some(v))
    }
    fn opt_i64(&mut self) -> Result<Option<i64>, CodecError> {
        let some = self.bool()?;
        let v = self.i64()?;
        Ok(some.then_some(v))
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, CodecError> {
        let some = self.bool()?;
        let v = self.u64()?;
        Ok(some.then_some(v))
    }
    fn opt_u128(&mut self) -> Result<Option<u128>, CodecError> {
        let some = self.bool()?;
        let v = u128::from_le_bytes(self.take(16)?.try_into().expect("16 bytes"));
        Ok(some.then_some(v))
    }
    fn limits(&mut self) -> Result<Limits, CodecError> {
        let max_open_orders = self.opt_u32()?;
        let max_orders_per_sec = self.opt_u32()?;
        let n = self.u32()? as usize;
        // Bounded by the bytes left, so a corrupt count cannot reserve gigabytes.
        let mut instruments = Vec::with_capacity(n.min((self.buf.len() - self.pos) / ENTRY));
        for _ in 0..n {
            let id = self.u32()?;
            instruments.push((
                id,
                InstrumentLimits {
                    max_order_lots: self.opt_u64()?,
                    max_order_notional: self.opt_u128()?,
                    max_long_lots: self.opt_u64()?,
                    max_short_lots: self.opt_u64()?,
                },
            ));
        }
        Ok(Limits {
            max_open_orders,
            max_orders_per_sec,
            instruments,
        })
    }
    fn tag<T>(&mut self, what: &'static str, f: impl Fn(u8) -> Option<T>) -> Result<T, CodecError> {
        let offset = self.pos;
        let tag = self.u8()?;
        f(tag).ok_or(CodecError::BadTag { what, tag, offset })
    }
    fn side(&mut self) -> Result<Side, CodecError> {
        self.tag("side", |t| match t {
            0 => Some(Side::Buy),
            1 => Some(Side::Sell),
            _ => None,
        })
    }
    fn opt_side(&mut self) -> Result<Option<Side>, CodecError> {
        let some = self.bool()?;
        let side = self.side()?;
        Ok(some.then_some(side))
    }
    fn order_type(&mut self) -> Result<OrderType, CodecError> {
        self.tag("order type", |t| match t {
            0 => Some(OrderType::Limit),
            1 => Some(OrderType::Market),
            2 => Some(OrderType::StopMarket),
            3 => Some(OrderType::StopLimit),
            _ => None,
        })
    }
    fn tif(&mut self) -> Result<TimeInForce, CodecError> {
        self.tag("time in force", |t| match t {
            0 => Some(TimeInForce::Gtc),
            1 => Some(TimeInForce::Ioc),
            2 => Some(TimeInForce::Fok),
            3 => Some(TimeInForce::Gtd),
            _ => None,
        })
    }
    fn stp(&mut self) -> Result<SelfTradePrevention, CodecError> {
        self.tag("self-trade prevention", |t| match t {
            0 => Some(SelfTradePrevention::CancelTaker),
            1 => Some(SelfTradePrevention::CancelMaker),
            2 => Some(SelfTradePrevention::CancelBoth),
            3 => Some(SelfTradePrevention::DecrementAndCancel),
            _ => None,
        })
    }
    fn command_tag(&mut self) -> Result<CommandTag, CodecError> {
        self.tag("command", |t| {
            Some(match t {
                0 => CommandTag::Place,
                1 => CommandTag::Cancel,
                2 => CommandTag::Amend,
                3 => CommandTag::MassCancel,
                4 => CommandTag::SessionClosed,
                5 => CommandTag::AddInstrument,
                6 => CommandTag::Halt,
                7 => CommandTag::Resume,
                8 => CommandTag::Heartbeat,
                9 => CommandTag::Snapshot,
                10 => CommandTag::SetLimits,
                11 => CommandTag::DisableAccount,
                12 => CommandTag::EnableAccount,
                _ => return None,
            })
        })
    }
    fn reject(&mut self) -> Result<RejectReason, CodecError> {
        self.tag("reject reason", |t| {
            RejectReason::ALL.into_iter().find(|r| *r as u8 == t)
        })
    }
    fn done(&mut self) -> Result<DoneReason, CodecError> {
        self.tag("done reason", |t| {
            Some(match t {
                0 => DoneReason::Filled,
                1 => DoneReason::Cancelled,
                2 => DoneReason::MassCancelled,
                3 => DoneReason::SessionClosed,
                4 => DoneReason::ImmediateOrCancel,
                5 => DoneReason::MarketProtection,
                6 => DoneReason::SelfTrade,
                7 => DoneReason::Expired,
                8 => DoneReason::FillOrKill,
                9 => DoneReason::AccountDisabled,
                _ => return None,
            })
        })
    }
    fn spec(&mut self) -> Result<InstrumentSpec, CodecError> {
        let len = self.u8()? as usize;
        let at = self.pos;
        let symbol = std::str::from_utf8(self.take(len)?)
            .map_err(|_| CodecError::BadSymbol { offset: at })?
            .to_string();
        Ok(InstrumentSpec {
            symbol,
            tick_size: self.dec()?,
            lot_size: self.dec()?,
            min_size: self.dec()?,
            max_size: self.dec()?,
            reference_price: self.dec()?,
            band: self.dec()?,
        })
    }
    fn order_ref(&mut self) -> Result<OrderRef, CodecError> {
        let offset = self.pos;
        match self.u8()? {
            0 => Ok(OrderRef::Id(OrderId(self.u64()?))),
            1 => Ok(OrderRef::Client(self.u64()?)),
            tag => Err(CodecError::BadTag {
                what: "order ref",
                tag,
                offset,
            }),
        }
    }
}

/// Appends the encoding of `cmd` to `out`.
pub fn encode_command(cmd: &Command, out: &mut Vec<u8>) {
    let mut w = W(out);
    w.u8(cmd.kind.tag() as u8);
    w.u64(cmd.ts);
    w.u64(cmd.corr);
    w.u64(cmd.deadline);
    match &cmd.kind {
        CommandKind::Place(p) => {
            w.u64(p.account);
            w.u64(p.session);
            w.u64(p.client_id);
            w.u32(p.instrument);
            w.u8(p.side as u8);
            w.u8(p.order_type as u8);
            w.i64(p.price);
            w.i64(p.trigger);
            w.u64(p.size);
            w.u8(p.tif as u8);
            w.u64(p.expiry);
            w.bool(p.post_only);
            w.u64(p.display);
            w.u8(p.stp as u8);
        }
        CommandKind::Cancel(c) => {
            w.u64(c.account);
            w.order_ref(c.order);
        }
        CommandKind::Amend(a) => {
            w.u64(a.account);
            w.order_ref(a.order);
            w.opt_i64(a.price);
            w.opt_u64(a.size);
            w.opt_i64(a.trigger);
        }
        CommandKind::MassCancel(m) => {
            w.u64(m.account);
            w.opt_u32(m.instrument);
            w.bool(m.side.is_some());
            w.u8(m.side.map_or(0, |s| s as u8));
        }
        CommandKind::SessionClosed { session } => w.u64(*session),
        CommandKind::AddInstrument(spec) => w.spec(spec),
        CommandKind::Halt { instrument } | CommandKind::Resume { instrument } => w.u32(*instrument),
        CommandKind::SetLimits { account, limits } => {
            w.u64(*account);
            w.bool(limits.is_some());
            if let Some(l) = limits {
                w.limits(l);
            }
        }
        CommandKind::DisableAccount { account } | CommandKind::EnableAccount { account } => {
            w.u64(*account)
        }
        CommandKind::Heartbeat | CommandKind::Snapshot => {}
    }
}

/// Decodes one command from the start of `buf`; returns it and the bytes it used.
pub fn decode_command(buf: &[u8]) -> Result<(Command, usize), CodecError> {
    let mut r = R { buf, pos: 0 };
    let tag = r.command_tag()?;
    let ts = r.u64()?;
    let corr = r.u64()?;
    let deadline = r.u64()?;
    let kind = match tag {
        CommandTag::Place => CommandKind::Place(Place {
            account: r.u64()?,
            session: r.u64()?,
            client_id: r.u64()?,
            instrument: r.u32()?,
            side: r.side()?,
            order_type: r.order_type()?,
            price: r.i64()?,
            trigger: r.i64()?,
            size: r.u64()?,
            tif: r.tif()?,
            expiry: r.u64()?,
            post_only: r.bool()?,
            display: r.u64()?,
            stp: r.stp()?,
        }),
        CommandTag::Cancel => CommandKind::Cancel(Cancel {
            account: r.u64()?,
            order: r.order_ref()?,
        }),
        CommandTag::Amend => CommandKind::Amend(Amend {
            account: r.u64()?,
            order: r.order_ref()?,
            price: r.opt_i64()?,
            size: r.opt_u64()?,
            trigger: r.opt_i64()?,
        }),
        CommandTag::MassCancel => CommandKind::MassCancel(MassCancel {
            account: r.u64()?,
            instrument: r.opt_u32()?,
            side: r.opt_side()?,
        }),
        CommandTag::SessionClosed => CommandKind::SessionClosed { session: r.u64()? },
        CommandTag::AddInstrument => CommandKind::AddInstrument(Box::new(r.spec()?)),
        CommandTag::Halt => CommandKind::Halt {
            instrument: r.u32()?,
        },
        CommandTag::Resume => CommandKind::Resume {
            instrument: r.u32()?,
        },
        CommandTag::Heartbeat => CommandKind::Heartbeat,
        CommandTag::Snapshot => CommandKind::Snapshot,
        CommandTag::SetLimits => CommandKind::SetLimits {
            account: r.u64()?,
            limits: match r.bool()? {
                true => Some(Box::new(r.limits()?)),
                false => None,
            },
        },
        CommandTag::DisableAccount => CommandKind::DisableAccount { account: r.u64()? },
        CommandTag::EnableAccount => CommandKind::EnableAccount { account: r.u64()? },
    };
    Ok((
        Command {
            ts,
            corr,
            deadline,
            kind,
        },
        r.pos,
    ))
}

/// Appends the encoding of `event` to `out`.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    let mut w = W(out);
    w.u64(event.seq);
    w.u64(event.ts);
    match &event.kind {
        EventKind::PlaceAccepted { corr, order: o } => {
            w.u8(0);
            w.u64(*corr);
            w.u64(o.order_id.0);
            w.u64(o.account);
            w.u64(o.client_id);
            w.u64(o.session);
            w.u32(o.instrument);
            w.u8(o.side as u8);
            w.u8(o.order_type as u8);
            w.i64(o.price);
            w.i64(o.trigger);
            w.u64(o.size);
            w.u8(o.tif as u8);
            w.u64(o.expiry);
            w.bool(o.post_only);
            w.u64(o.display);
            w.u8(o.stp as u8);
        }
        EventKind::Accepted {
            corr,
            command,
            account,
            order_id,
            instrument,
        } => {
            w.u8(1);
            w.u64(*corr);
            w.u8(*command as u8);
            w.u64(*account);
            w.u64(order_id.0);
            w.opt_u32(*instrument);
        }
        EventKind::Rejected {
            corr,
            command,
            account,
            client_id,
            order_id,
            reason,
        } => {
            w.u8(2);
            w.u64(*corr);
            w.u8(*command as u8);
            w.u64(*account);
            w.u64(*client_id);
            w.u64(order_id.0);
            w.u8(*reason as u8);
        }
        EventKind::OrderRested {
            order_id,
            account,
            instrument,
            side,
            price,
            visible,
            remaining,
        } => {
            w.u8(3);
            w.u64(order_id.0);
            w.u64(*account);
            w.u32(*instrument);
            w.u8(*side as u8);
            w.i64(*price);
            w.u64(*visible);
            w.u64(*remaining);
        }
        EventKind::StopArmed {
            order_id,
            account,
            instrument,
            side,
            trigger,
        } => {
            w.u8(4);
            w.u64(order_id.0);
            w.u64(*account);
            w.u32(*instrument);
            w.u8(*side as u8);
            w.i64(*trigger);
        }
        EventKind::StopTriggered {
            order_id,
            account,
            instrument,
            side,
            trigger,
            last_price,
        } => {
            w.u8(5);
            w.u64(order_id.0);
            w.u64(*account);
            w.u32(*instrument);
            w.u8(*side as u8);
            w.i64(*trigger);
            w.i64(*last_price);
        }
        EventKind::Trade {
            trade_id,
            instrument,
            price,
            size,
            aggressor,
            taker_order,
            taker_account,
            maker_order,
            maker_account,
            taker_remaining,
            maker_remaining,
        } => {
            w.u8(6);
            w.u64(*trade_id);
            w.u32(*instrument);
            w.i64(*price);
            w.u64(*size);
            w.u8(*aggressor as u8);
            w.u64(taker_order.0);
            w.u64(*taker_account);
            w.u64(maker_order.0);
            w.u64(*maker_account);
            w.u64(*taker_remaining);
            w.u64(*maker_remaining);
        }
        EventKind::OrderAmended {
            order_id,
            account,
            instrument,
            side,
            price,
            trigger,
            remaining,
            visible,
            priority_kept,
        } => {
            w.u8(7);
            w.u64(order_id.0);
            w.u64(*account);
            w.u32(*instrument);
            w.u8(*side as u8);
            w.i64(*price);
            w.i64(*trigger);
            w.u64(*remaining);
            w.u64(*visible);
            w.bool(*priority_kept);
        }
        EventKind::OrderDone {
            order_id,
            account,
            instrument,
            side,
            price,
            filled,
            cancelled,
            reason,
        } => {
            w.u8(8);
            w.u64(order_id.0);
            w.u64(*account);
            w.u32(*instrument);
            w.u8(*side as u8);
            w.i64(*price);
            w.u64(*filled);
            w.u64(*cancelled);
            w.u8(*reason as u8);
        }
        EventKind::LevelChanged {
            instrument,
            side,
            price,
            size,
            orders,
        } => {
            w.u8(9);
            w.u32(*instrument);
            w.u8(*side as u8);
            w.i64(*price);
            w.u64(*size);
            w.u32(*orders);
        }
        EventKind::InstrumentAdded { instrument, spec } => {
            w.u8(10);
            w.u32(*instrument);
            w.spec(spec);
        }
        EventKind::TradingStatus { instrument, halted } => {
            w.u8(11);
            w.u32(*instrument);
            w.bool(*halted);
        }
        EventKind::AccountStatus { account, disabled } => {
            w.u8(12);
            w.u64(*account);
            w.bool(*disabled);
        }
    }
}

/// Decodes one event from the start of `buf`; returns it and the bytes it used.
pub fn decode_event(buf: &[u8]) -> Result<(Event, usize), CodecError> {
    let mut r = R { buf, pos: 0 };
    let seq = r.u64()?;
    let ts = r.u64()?;
    let offset = r.pos;
    let kind = match r.u8()? {
        0 => EventKind::PlaceAccepted {
            corr: r.u64()?,
            order: OrderInfo {
                order_id: OrderId(r.u64()?),
                account: r.u64()?,
                client_id: r.u64()?,
                session: r.u64()?,
                instrument: r.u32()?,
                side: r.side()?,
                order_type: r.order_type()?,
                price: r.i64()?,
                trigger: r.i64()?,
                size: r.u64()?,
                tif: r.tif()?,
                expiry: r.u64()?,
                post_only: r.bool()?,
                display: r.u64()?,
                stp: r.stp()?,
            },
        },
        1 => EventKind::Accepted {
            corr: r.u64()?,
            command: r.command_tag()?,
            account: r.u64()?,
            order_id: OrderId(r.u64()?),
            instrument: r.opt_u32()?,
        },
        2 => EventKind::Rejected {
            corr: r.u64()?,
            command: r.command_tag()?,
            account: r.u64()?,
            client_id: r.u64()?,
            order_id: OrderId(r.u64()?),
            reason: r.reject()?,
        },
        3 => EventKind::OrderRested {
            order_id: OrderId(r.u64()?),
            account: r.u64()?,
            instrument: r.u32()?,
            side: r.side()?,
            price: r.i64()?,
            visible: r.u64()?,
            remaining: r.u64()?,
        },
        4 => EventKind::StopArmed {
            order_id: OrderId(r.u64()?),
            account: r.u64()?,
            instrument: r.u32()?,
            side: r.side()?,
            trigger: r.i64()?,
        },
        5 => EventKind::StopTriggered {
            order_id: OrderId(r.u64()?),
            account: r.u64()?,
            instrument: r.u32()?,
            side: r.side()?,
            trigger: r.i64()?,
            last_price: r.i64()?,
        },
        6 => EventKind::Trade {
            trade_id: r.u64()?,
            instrument: r.u32()?,
            price: r.i64()?,
            size: r.u64()?,
            aggressor: r.side()?,
            taker_order: OrderId(r.u64()?),
            taker_account: r.u64()?,
            maker_order: OrderId(r.u64()?),
            maker_account: r.u64()?,
            taker_remaining: r.u64()?,
            maker_remaining: r.u64()?,
        },
        7 => EventKind::OrderAmended {
            order_id: OrderId(r.u64()?),
            account: r.u64()?,
            instrument: r.u32()?,
            side: r.side()?,
            price: r.i64()?,
            trigger: r.i64()?,
            remaining: r.u64()?,
            visible: r.u64()?,
            priority_kept: r.bool()?,
        },
        8 => EventKind::OrderDone {
            order_id: OrderId(r.u64()?),
            account: r.u64()?,
            instrument: r.u32()?,
            side: r.side()?,
            price: r.i64()?,
            filled: r.u64()?,
            cancelled: r.u64()?,
            reason: r.done()?,
        },
        9 => EventKind::LevelChanged {
            instrument: r.u32()?,
            side: r.side()?,
            price: r.i64()?,
            size: r.u64()?,
            orders: r.u32()?,
        },
        10 => EventKind::InstrumentAdded {
            instrument: r.u32()?,
            spec: Arc::new(r.spec()?),
        },
        11 => EventKind::TradingStatus {
            instrument: r.u32()?,
            halted: r.bool()?,
        },
        12 => EventKind::AccountStatus {
            account: r.u64()?,
            disabled: r.bool()?,
        },
        tag => {
            return Err(CodecError::BadTag {
                what: "event",
                tag,
                offset,
            })
        }
    };
    Ok((Event { seq, ts, kind }, r.pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, InstrumentLimits, InstrumentSpec, Limits};
    use std::str::FromStr;

    fn spec() -> InstrumentSpec {
        let d = |s| Decimal::from_str(s).unwrap();
        InstrumentSpec {
            symbol: "ETH-USD".into(),
            tick_size: d("0.01"),
            lot_size: d("0.001"),
            min_size: d("0.001"),
            max_size: d("1000"),
            reference_price: d("3000"),
            band: d("0.2"),
        }
    }

    fn sample_commands() -> Vec<Command> {
        let mut stop = Place::limit(3, 0, Side::Buy, 300_500, 10);
        stop.order_type = OrderType::StopLimit;
        stop.trigger = 300_400;
        stop.tif = TimeInForce::Gtd;
        stop.expiry = 1_000;
        let kinds = vec![
            CommandKind::AddInstrument(Box::new(spec())),
            CommandKind::Place(Place {
                client_id: 9,
                session: 4,
                display: 5,
                ..Place::limit(1, 0, Side::Sell, 300_000, 20)
            }),
            CommandKind::Place(Place::limit(2, 0, Side::Buy, 300_000, 7)),
            CommandKind::Place(stop),
            CommandKind::Place(Place::market(2, 0, Side::Buy, 3)),
            CommandKind::Amend(Amend {
                account: 1,
                order: OrderRef::Client(9),
                price: Some(300_100),
                size: None,
                trigger: None,
            }),
            CommandKind::Cancel(Cancel {
                account: 2,
                order: OrderRef::Id(OrderId(77)),
            }),
            CommandKind::MassCancel(MassCancel {
                account: 1,
                instrument: Some(0),
                side: Some(Side::Sell),
            }),
            CommandKind::Halt { instrument: 0 },
            CommandKind::Resume { instrument: 0 },
            CommandKind::SessionClosed { session: 4 },
            CommandKind::Heartbeat,
            CommandKind::SetLimits {
                account: 0,
                limits: Some(Box::new(Limits {
                    max_open_orders: Some(100),
                    max_orders_per_sec: None,
                    instruments: vec![(
                        0,
                        InstrumentLimits {
                            max_order_lots: Some(5_000),
                            max_order_notional: Some(u128::MAX - 7),
                            max_long_lots: None,
                            max_short_lots: Some(0),
                        },
                    )],
                })),
            },
            CommandKind::SetLimits {
                account: 2,
                limits: None,
            },
            CommandKind::Place(Place::limit(2, 0, Side::Buy, 299_000, 7)),
            CommandKind::DisableAccount { account: 2 },
            CommandKind::EnableAccount { account: 2 },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Command {
                deadline: 0,
                ts: 10 + i as u64,
                corr: i as u64,
                kind,
            })
            .collect()
    }

    #[test]
    fn commands_and_events_round_trip() {
        let mut engine = Engine::default();
        let mut events = Vec::new();
        for cmd in sample_commands() {
            let mut buf = Vec::new();
            encode_command(&cmd, &mut buf);
            let (back, used) = decode_command(&buf).unwrap();
            assert_eq!(back, cmd);
            assert_eq!(used, buf.len());
            engine.apply(&cmd, &mut events);
        }
        let kinds: std::collections::HashSet<_> = events
            .iter()
            .map(|e| std::mem::discriminant(&e.kind))
            .collect();
        assert!(kinds.len() >= 10, "sample covers most event kinds");
        assert!(events.iter().any(|e| matches!(
            e.kind,
            EventKind::OrderDone {
                reason: DoneReason::AccountDisabled,
                ..
            }
        )));
        assert!(events
            .iter()
            .any(|e| matches!(e.kind, EventKind::AccountStatus { disabled: true, .. })));
        for e in &events {
            let mut buf = Vec::new();
            encode_event(e, &mut buf);
            let (back, used) = decode_event(&buf).unwrap();
            assert_eq!(&back, e);
            assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn every_reject_reason_round_trips_with_its_number() {
        let reasons = RejectReason::ALL.map(|reason| EventKind::Rejected {
            corr: 1,
            command: CommandTag::SetLimits,
            account: 0,
            client_id: 0,
            order_id: OrderId::NONE,
            reason,
        });
        for (k, kind) in reasons.into_iter().enumerate() {
            let e = Event {
                seq: k as u64,
                ts: 0,
                kind,
            };
            let mut buf = Vec::new();
            encode_event(&e, &mut buf);
            assert_eq!(decode_event(&buf).unwrap().0, e);
        }
        assert_eq!(
            RejectReason::MaxOrderRate as u8,
            32,
            "discriminants never move"
        );
    }

    #[test]
    fn limits_with_a_corrupt_count_are_truncated_input_not_a_huge_allocation() {
        let cmd = Command::new(
            1,
            1,
            CommandKind::SetLimits {
                account: 3,
                limits: Some(Box::default()),
            },
        );
        let mut buf = Vec::new();
        encode_command(&cmd, &mut buf);
        let count_at = buf.len() - 4;
        buf[count_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_command(&buf),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn truncated_and_unknown_input_is_an_error_not_a_panic() {
        let samples = sample_commands();
        let set_limits = samples
            .iter()
            .find(|c| {
                matches!(
                    &c.kind,
                    CommandKind::SetLimits {
                        limits: Some(_),
                        ..
                    }
                )
            })
            .unwrap();
        for cmd in [&samples[1], set_limits] {
            let mut buf = Vec::new();
            encode_command(cmd, &mut buf);
            for cut in 0..buf.len() {
                assert!(matches!(
                    decode_command(&buf[..cut]),
                    Err(CodecError::Truncated { .. })
                ));
            }
        }
        assert!(matches!(
            decode_command(&[200]),
            Err(CodecError::BadTag {
                what: "command",
                ..
            })
        ));
        let mut ev = vec![0u8; 16];
        ev.push(99);
        assert!(matches!(
            decode_event(&ev),
            Err(CodecError::BadTag { what: "event", .. })
        ));
    }
}
