//! Pre-trade limits at the edge: the decimal form config and `RiskService` speak (sizes in the
//! instrument's lots, notionals in its quote currency), converted exactly to and from the
//! engine's per-instrument ticks and lots ([`ticker_engine::Limits`]), and the table of the
//! limits in force that `GetLimits` answers from.
//!
//! The engine enforces the limits; this table only remembers what it was told, in engine
//! order: every change carries the engine sequence number of its acceptance, and an older
//! change never overwrites a newer one (two RPCs may return in either order).

use crate::order_entry::{self, Violations};
use parking_lot::RwLock;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use ticker_engine::{AccountId, InstrumentLimits, Limits};
use ticker_feeds::wire::Scale;
use ticker_feeds::{Instruments, WireInstrument};
use ticker_proto::v1 as pb;

/// One account's limits (or the default set) as decimals; every limit optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSpec {
    /// Live orders across instruments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_open_orders: Option<u32>,
    /// Orders accepted per calendar second of engine time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_orders_per_sec: Option<u32>,
    /// By instrument symbol.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub instruments: BTreeMap<String, InstrumentLimitsSpec>,
}

/// Limits on one instrument, as decimal strings of its scales.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstrumentLimitsSpec {
    /// Largest size of one order (on the lot grid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_order_size: Option<String>,
    /// Largest price × size of one order, in the quote currency (rounded down to the
    /// instrument's tick size × lot size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_order_notional: Option<String>,
    /// Largest long and short position, counting open orders as filled (on the lot grid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_long: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_short: Option<String>,
}

impl LimitsSpec {
    pub fn from_proto(p: &pb::AccountLimits) -> LimitsSpec {
        LimitsSpec {
            max_open_orders: p.max_open_orders,
            max_orders_per_sec: p.max_orders_per_sec,
            instruments: p
                .instruments
                .iter()
                .map(|i| {
                    (
                        i.instrument.clone(),
                        InstrumentLimitsSpec {
                            max_order_size: i.max_order_size.clone(),
                            max_order_notional: i.max_order_notional.clone(),
                            max_long: i.max_long.clone(),
                            max_short: i.max_short.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn to_proto(&self) -> pb::AccountLimits {
        pb::AccountLimits {
            max_open_orders: self.max_open_orders,
            max_orders_per_sec: self.max_orders_per_sec,
            instruments: self
                .instruments
                .iter()
                .map(|(symbol, l)| pb::InstrumentLimits {
                    instrument: symbol.clone(),
                    max_order_size: l.max_order_size.clone(),
                    max_order_notional: l.max_order_notional.clone(),
                    max_long: l.max_long.clone(),
                    max_short: l.max_short.clone(),
                })
                .collect(),
        }
    }

    /// The engine's limits; every bad field is named (`field` prefixes the names, e.g.
    /// `limits` or `risk.accounts.7`). A duplicated instrument is refused where the
    /// duplicate can arise (the repeated proto field).
    pub fn to_engine(
        &self,
        instruments: &Instruments,
        field: &str,
        v: &mut Violations,
    ) -> Option<Limits> {
        let mut out = Vec::with_capacity(self.instruments.len());
        for (symbol, spec) in &self.instruments {
            let at = format!("{field}.instruments[{}]", order_entry::shortened(symbol));
            let Some(wire) =
                order_entry::instrument(instruments, &format!("{at}.instrument"), symbol, v)
            else {
                continue;
            };
            let lots = |name: &str, text: &Option<String>, v: &mut Violations| {
                text.as_deref()
                    .and_then(|t| order_entry::size(&wire, &format!("{at}.{name}"), t, v))
            };
            let limits = InstrumentLimits {
                max_order_lots: lots("max_order_size", &spec.max_order_size, v),
                max_order_notional: spec
                    .max_order_notional
                    .as_deref()
                    .and_then(|t| notional_units(&wire, &format!("{at}.max_order_notional"), t, v)),
                max_long_lots: lots("max_long", &spec.max_long, v),
                max_short_lots: lots("max_short", &spec.max_short, v),
            };
            out.push((wire.id(), limits));
        }
        out.sort_by_key(|&(id, _)| id);
        v.is_empty().then_some(Limits {
            max_open_orders: self.max_open_orders,
            max_orders_per_sec: self.max_orders_per_sec,
            instruments: out,
        })
    }

    /// The decimal form of the engine's limits (instruments the feeds do not know are left
    /// out: they cannot be, since limits name only instruments the engine has).
    pub fn from_engine(limits: &Limits, instruments: &Instruments) -> LimitsSpec {
        let mut spec = LimitsSpec {
            max_open_orders: limits.max_open_orders,
            max_orders_per_sec: limits.max_orders_per_sec,
            instruments: BTreeMap::new(),
        };
        for (id, l) in &limits.instruments {
            let Some(wire) = instruments.get(*id) else {
                continue;
            };
            let size = |lots: Option<u64>| lots.map(|l| wire.size.to_string_wide(l as i128));
            spec.instruments.insert(
                wire.symbol().to_string(),
                InstrumentLimitsSpec {
                    max_order_size: size(l.max_order_lots),
                    max_order_notional: l.max_order_notional.map(|n| {
                        notional_scale(&wire).to_string_wide(n.min(i128::MAX as u128) as i128)
                    }),
                    max_long: size(l.max_long_lots),
                    max_short: size(l.max_short_lots),
                },
            );
        }
        spec
    }
}

/// One unit of notional: a tick times a lot, in the quote currency.
fn notional_scale(wire: &WireInstrument) -> Scale {
    let spec = &wire.instrument.spec;
    Scale::new(spec.tick_size * spec.lot_size)
}

/// A quote-currency amount as whole ticks × lots, rounded down (a limit never grows by
/// rounding).
fn notional_units(
    wire: &WireInstrument,
    field: &str,
    text: &str,
    v: &mut Violations,
) -> Option<u128> {
    let amount = order_entry::decimal(field, text, v)?;
    if amount <= Decimal::ZERO {
        v.add(field, format!("{text} must be positive"));
        return None;
    }
    let spec = &wire.instrument.spec;
    let units = amount
        .checked_div(spec.tick_size * spec.lot_size)
        .map(|u| u.floor());
    match units.and_then(|u| u128::try_from(u).ok()) {
        Some(u) if u > 0 => Some(u),
        Some(_) => {
            v.add(
                field,
                format!(
                    "{text} is less than one tick × lot ({}) of {}",
                    spec.tick_size * spec.lot_size,
                    wire.symbol()
                ),
            );
            None
        }
        None => {
            v.add(field, format!("{text} is out of range"));
            None
        }
    }
}

/// The limits a market applies at start (`[risk]` in tickerd's config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RiskLimits {
    /// The default set [none].
    pub default: Option<LimitsSpec>,
    /// Accounts' own limits [none].
    pub accounts: BTreeMap<AccountId, LimitsSpec>,
}

/// The limits in force and the disabled accounts, as the engine accepted them.
#[derive(Default)]
pub struct LimitsTable {
    inner: RwLock<TableInner>,
}

#[derive(Default)]
struct TableInner {
    /// Account (0: the default set) → engine seq of the change and the limits it set.
    limits: HashMap<AccountId, (u64, Option<Limits>)>,
    disabled: HashMap<AccountId, (u64, bool)>,
}

/// What `GetLimits` answers (over the bus too: postcard, docs/scale-out.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountLimitsView {
    pub own: Option<Limits>,
    pub default: Option<Limits>,
    pub disabled: bool,
}

impl LimitsTable {
    /// Records `limits` for `account` as of engine sequence `seq`, unless a later change is
    /// recorded already.
    pub fn set(&self, seq: u64, account: AccountId, limits: Option<Limits>) {
        let mut inner = self.inner.write();
        let entry = inner.limits.entry(account).or_insert((0, None));
        if entry.0 <= seq {
            *entry = (seq, limits);
        }
    }

    pub fn set_disabled(&self, seq: u64, account: AccountId, disabled: bool) {
        let mut inner = self.inner.write();
        let entry = inner.disabled.entry(account).or_insert((0, false));
        if entry.0 <= seq {
            *entry = (seq, disabled);
        }
    }

    pub fn get(&self, account: AccountId) -> AccountLimitsView {
        let inner = self.inner.read();
        let limits = |a| inner.limits.get(&a).and_then(|(_, l)| l.clone());
        AccountLimitsView {
            own: (account != 0).then(|| limits(account)).flatten(),
            default: limits(0),
            disabled: inner.disabled.get(&account).is_some_and(|(_, d)| *d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruments() -> Instruments {
        crate::defaults::wire_instruments()
    }

    fn btc(spec: InstrumentLimitsSpec) -> LimitsSpec {
        LimitsSpec {
            max_open_orders: Some(10),
            max_orders_per_sec: None,
            instruments: BTreeMap::from([("BTC-USD".to_string(), spec)]),
        }
    }

    #[test]
    fn decimals_become_lots_and_ticks_times_lots_and_come_back() {
        let all = instruments();
        let spec = btc(InstrumentLimitsSpec {
            max_order_size: Some("2.5".into()),
            max_order_notional: Some("100000".into()),
            max_long: Some("10".into()),
            max_short: None,
        });
        let mut v = Violations::default();
        let limits = spec.to_engine(&all, "limits", &mut v).unwrap();
        assert!(v.is_empty());
        // BTC-USD: tick 0.01, lot 0.00001, so a notional unit is 1e-7 USD.
        let btc = limits.instrument(0).unwrap();
        assert_eq!(btc.max_order_lots, Some(250_000));
        assert_eq!(btc.max_order_notional, Some(1_000_000_000_000));
        assert_eq!(btc.max_long_lots, Some(1_000_000));
        assert_eq!(btc.max_short_lots, None);
        let back = LimitsSpec::from_engine(&limits, &all);
        let b = &back.instruments["BTC-USD"];
        assert_eq!(b.max_order_size.as_deref(), Some("2.50000"));
        assert_eq!(b.max_order_notional.as_deref(), Some("100000.0000000"));
        assert_eq!(b.max_long.as_deref(), Some("10.00000"));
        assert_eq!(back.max_open_orders, Some(10));
        // Through the wire form and back, nothing changes.
        let again = LimitsSpec::from_proto(&back.to_proto())
            .to_engine(&all, "limits", &mut v)
            .unwrap();
        assert_eq!(again, limits);
    }

    #[test]
    fn bad_fields_are_each_named() {
        let all = instruments();
        let mut spec = btc(InstrumentLimitsSpec {
            max_order_size: Some("0.000001".into()),
            max_order_notional: Some("-5".into()),
            max_long: Some("ten".into()),
            max_short: None,
        });
        spec.instruments
            .insert("NOPE-USD".into(), InstrumentLimitsSpec::default());
        let mut v = Violations::default();
        assert!(spec.to_engine(&all, "limits", &mut v).is_none());
        let e = v.finish(|| ()).unwrap_err();
        let fields: Vec<&str> = e.violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "limits.instruments[BTC-USD].max_order_size",
                "limits.instruments[BTC-USD].max_order_notional",
                "limits.instruments[BTC-USD].max_long",
                "limits.instruments[NOPE-USD].instrument",
            ]
        );
        // A notional below one unit cannot be a limit.
        let tiny = btc(InstrumentLimitsSpec {
            max_order_notional: Some("0.00000001".into()),
            ..InstrumentLimitsSpec::default()
        });
        let mut v = Violations::default();
        assert!(tiny.to_engine(&all, "limits", &mut v).is_none());
    }

    #[test]
    fn an_older_change_never_overwrites_a_newer_one() {
        let t = LimitsTable::default();
        let l = |n| Limits {
            max_open_orders: Some(n),
            ..Limits::default()
        };
        t.set(10, 7, Some(l(1)));
        t.set(5, 7, Some(l(2)));
        t.set(3, 0, Some(l(3)));
        t.set_disabled(9, 7, true);
        t.set_disabled(8, 7, false);
        let view = t.get(7);
        assert_eq!(view.own, Some(l(1)));
        assert_eq!(view.default, Some(l(3)));
        assert!(view.disabled);
        assert_eq!(t.get(0).own, None);
        t.set(11, 7, None);
        assert_eq!(t.get(7).own, None);
    }
}
