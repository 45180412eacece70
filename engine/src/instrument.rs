//! Instruments: their decimal specification from config and the exact conversion between
//! decimals at the edge and ticks/lots inside the engine.
//!
//! Conversions never round: a price off the tick grid or a size off the lot grid is rejected
//! with [`RejectReason::OffTick`] / [`RejectReason::OffLot`].

use crate::event::RejectReason;
use crate::types::{InstrumentId, Lots, Ticks};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An instrument as configured, in decimals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentSpec {
    pub symbol: String,
    /// Smallest price increment, e.g. `0.01`.
    #[serde(with = "decimal_bytes")]
    pub tick_size: Decimal,
    /// Smallest size increment, e.g. `0.0001`.
    #[serde(with = "decimal_bytes")]
    pub lot_size: Decimal,
    /// Smallest accepted order size (a multiple of `lot_size`).
    #[serde(with = "decimal_bytes")]
    pub min_size: Decimal,
    /// Largest accepted order size (a multiple of `lot_size`).
    #[serde(with = "decimal_bytes")]
    pub max_size: Decimal,
    /// Centre of the price band (on the tick grid).
    #[serde(with = "decimal_bytes")]
    pub reference_price: Decimal,
    /// Half-width of the price band as a fraction of the reference price, e.g. `0.10` for ±10%.
    /// Limit prices and stop triggers outside the band are rejected; market orders fill up to
    /// the band's edge and cancel the rest.
    #[serde(with = "decimal_bytes")]
    pub band: Decimal,
}

/// A decimal in serialized form as rust_decimal's fixed 16 bytes (flags, then the 96-bit
/// mantissa, little-endian): exact, and the same length whatever the value.
mod decimal_bytes {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        d.serialize().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let bytes = <[u8; 16]>::deserialize(d)?;
        // rust_decimal rejects nothing here: a scale above 28 is clamped, so a corrupt value
        // is caught by the record's checksum, not by this decoder.
        Ok(Decimal::deserialize(bytes))
    }
}

/// Why an [`InstrumentSpec`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "instrument symbol must be 1 to 32 characters of A-Z, 0-9, '-', '_', '/' or '.', got {0:?}"
    )]
    BadSymbol(String),
    #[error("{field} must be positive, got {value}")]
    NotPositive { field: &'static str, value: Decimal },
    #[error("{field} {value} is not a multiple of {unit_field} {unit}")]
    OffGrid {
        field: &'static str,
        value: Decimal,
        unit_field: &'static str,
        unit: Decimal,
    },
    #[error("min_size {min} is larger than max_size {max}")]
    MinAboveMax { min: Decimal, max: Decimal },
    #[error("band {0} must be between 0 (exclusive) and 1 (exclusive)")]
    BadBand(Decimal),
    #[error("{field} {value} does not fit the engine's integer range")]
    OutOfRange { field: &'static str, value: Decimal },
}

/// An instrument as the engine uses it: integer limits derived once from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instrument {
    pub id: InstrumentId,
    pub spec: InstrumentSpec,
    pub min_lots: Lots,
    pub max_lots: Lots,
    pub reference_ticks: Ticks,
    /// Lowest accepted price, in ticks (at least one tick).
    pub band_low: Ticks,
    /// Highest accepted price, in ticks.
    pub band_high: Ticks,
}

/// Highest price in ticks an instrument may reach (its band's top): far beyond any market (2^60
/// ticks is 11 quintillion), and far enough below `i64::MAX` that the book's ladder arithmetic
/// around a price (and on the negated keys of the bid side) can never overflow.
pub const MAX_TICKS: Ticks = 1 << 60;

impl Instrument {
    pub fn new(id: InstrumentId, spec: InstrumentSpec) -> Result<Self, SpecError> {
        let symbol_ok = !spec.symbol.is_empty()
            && spec.symbol.len() <= 32
            && spec
                .symbol
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_/.".contains(&b));
        if !symbol_ok {
            return Err(SpecError::BadSymbol(spec.symbol.clone()));
        }
        for (field, value) in [
            ("tick_size", spec.tick_size),
            ("lot_size", spec.lot_size),
            ("min_size", spec.min_size),
            ("max_size", spec.max_size),
            ("reference_price", spec.reference_price),
        ] {
            if value <= Decimal::ZERO {
                return Err(SpecError::NotPositive { field, value });
            }
        }
        if spec.band <= Decimal::ZERO || spec.band >= Decimal::ONE {
            return Err(SpecError::BadBand(spec.band));
        }
        // Checked arithmetic throughout: rust_decimal's operators panic on overflow, and a
        // spec arrives in a command or a snapshot, neither of which may bring the engine down.
        let grid = |field, value: Decimal, unit_field, unit: Decimal| {
            let out_of_range = SpecError::OutOfRange { field, value };
            if value
                .checked_rem(unit)
                .ok_or(out_of_range.clone())?
                .is_zero()
            {
                value
                    .checked_div(unit)
                    .and_then(|n| n.to_i64())
                    .ok_or(out_of_range)
            } else {
                Err(SpecError::OffGrid {
                    field,
                    value,
                    unit_field,
                    unit,
                })
            }
        };
        let min_lots = grid("min_size", spec.min_size, "lot_size", spec.lot_size)? as Lots;
        let max_lots = grid("max_size", spec.max_size, "lot_size", spec.lot_size)? as Lots;
        if min_lots > max_lots {
            return Err(SpecError::MinAboveMax {
                min: spec.min_size,
                max: spec.max_size,
            });
        }
        let reference_ticks = grid(
            "reference_price",
            spec.reference_price,
            "tick_size",
            spec.tick_size,
        )?;
        if reference_ticks > MAX_TICKS {
            return Err(SpecError::OutOfRange {
                field: "reference_price",
                value: spec.reference_price,
            });
        }
        // The band edges are rounded inwards onto the tick grid: the band is a protection
        // limit, so it may only get narrower, never wider than configured.
        let band_out_of_range = SpecError::OutOfRange {
            field: "band",
            value: spec.band,
        };
        let (reference, tick) = (spec.reference_price, spec.tick_size);
        let half = reference
            .checked_mul(spec.band)
            .ok_or(band_out_of_range.clone())?;
        let edge = |edge: Option<Decimal>| edge.and_then(|e| e.checked_div(tick));
        let band_low = edge(reference.checked_sub(half))
            .and_then(|low| low.ceil().to_i64())
            .ok_or(band_out_of_range.clone())?
            .max(1);
        let band_high = edge(reference.checked_add(half))
            .and_then(|high| high.floor().to_i64())
            .filter(|&high| high <= MAX_TICKS)
            .ok_or(band_out_of_range)?;
        Ok(Instrument {
            id,
            spec,
            min_lots,
            max_lots,
            reference_ticks,
            band_low,
            band_high,
        })
    }

    /// Converts a decimal price to ticks, rejecting prices off the tick grid or not positive.
    pub fn price_to_ticks(&self, price: Decimal) -> Result<Ticks, RejectReason> {
        if price <= Decimal::ZERO {
            return Err(RejectReason::InvalidPrice);
        }
        if !(price % self.spec.tick_size).is_zero() {
            return Err(RejectReason::OffTick);
        }
        // A price too large for a decimal quotient is as far outside the band as any.
        price
            .checked_div(self.spec.tick_size)
            .and_then(|ticks| ticks.to_i64())
            .ok_or(RejectReason::OutsideBand)
    }

    /// Converts a decimal size to lots, rejecting sizes off the lot grid or not positive.
    pub fn size_to_lots(&self, size: Decimal) -> Result<Lots, RejectReason> {
        if size <= Decimal::ZERO {
            return Err(RejectReason::InvalidSize);
        }
        if !(size % self.spec.lot_size).is_zero() {
            return Err(RejectReason::OffLot);
        }
        size.checked_div(self.spec.lot_size)
            .and_then(|lots| lots.to_u64())
            .ok_or(RejectReason::TooLarge)
    }

    /// The decimal price of `ticks`, in the tick size's scale.
    pub fn ticks_to_price(&self, ticks: Ticks) -> Decimal {
        let mut d = Decimal::from(ticks) * self.spec.tick_size;
        d.rescale(self.spec.tick_size.scale());
        d
    }

    /// The decimal size of `lots`, in the lot size's scale.
    pub fn lots_to_size(&self, lots: Lots) -> Decimal {
        let mut d = Decimal::from(lots) * self.spec.lot_size;
        d.rescale(self.spec.lot_size.scale());
        d
    }

    /// Whether a limit price (or stop trigger) lies inside the price band.
    pub fn in_band(&self, ticks: Ticks) -> bool {
        (self.band_low..=self.band_high).contains(&ticks)
    }
}

/// The instrument of the engine's unit tests: tick 1, lot 1, sizes 1..=1000, reference price
/// 100, band ±10% (90..=110), so every price and size in a test reads as itself. (The
/// integration tests have the same one in `tests/instrument`.)
#[cfg(test)]
pub(crate) fn whole_units(symbol: &str) -> InstrumentSpec {
    InstrumentSpec {
        symbol: symbol.into(),
        tick_size: Decimal::ONE,
        lot_size: Decimal::ONE,
        min_size: Decimal::ONE,
        max_size: Decimal::new(1000, 0),
        reference_price: Decimal::new(100, 0),
        band: Decimal::new(1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    pub(crate) fn btc() -> InstrumentSpec {
        InstrumentSpec {
            symbol: "BTC-USD".into(),
            tick_size: d("0.01"),
            lot_size: d("0.0001"),
            min_size: d("0.0001"),
            max_size: d("100"),
            reference_price: d("50000"),
            band: d("0.10"),
        }
    }

    #[test]
    fn converts_on_grid_values_exactly_and_back() {
        let i = Instrument::new(0, btc()).unwrap();
        assert_eq!(i.price_to_ticks(d("50000.25")), Ok(5_000_025));
        assert_eq!(i.size_to_lots(d("1.5")), Ok(15_000));
        assert_eq!(i.ticks_to_price(5_000_025).to_string(), "50000.25");
        assert_eq!(i.lots_to_size(15_000).to_string(), "1.5000");
        assert_eq!(i.ticks_to_price(5_000_000).to_string(), "50000.00");
    }

    #[test]
    fn off_grid_values_are_rejected_not_rounded() {
        let i = Instrument::new(0, btc()).unwrap();
        assert_eq!(i.price_to_ticks(d("50000.001")), Err(RejectReason::OffTick));
        assert_eq!(i.size_to_lots(d("0.00015")), Err(RejectReason::OffLot));
        assert_eq!(i.price_to_ticks(d("0")), Err(RejectReason::InvalidPrice));
        assert_eq!(i.price_to_ticks(d("-1")), Err(RejectReason::InvalidPrice));
        assert_eq!(i.size_to_lots(d("0")), Err(RejectReason::InvalidSize));
    }

    #[test]
    fn the_largest_decimals_are_rejected_not_a_panic() {
        let mut spec = btc();
        spec.lot_size = d("0.0000000001");
        spec.min_size = spec.lot_size;
        let i = Instrument::new(0, spec).unwrap();
        // Quotients beyond a decimal's range: the division itself would overflow.
        let huge = d("79228162514264337593543950335");
        assert_eq!(i.price_to_ticks(huge), Err(RejectReason::OutsideBand));
        assert_eq!(i.size_to_lots(huge), Err(RejectReason::TooLarge));
    }

    #[test]
    fn band_is_rounded_inwards_onto_the_grid() {
        let mut spec = btc();
        spec.reference_price = d("100.01");
        spec.band = d("0.1");
        let i = Instrument::new(0, spec).unwrap();
        // 100.01 ± 10.001 = [90.009, 110.011] -> [90.01, 110.01]
        assert_eq!((i.band_low, i.band_high), (9001, 11001));
        assert!(i.in_band(9001) && i.in_band(11001));
        assert!(!i.in_band(9000) && !i.in_band(11002));
    }

    #[test]
    fn prices_beyond_max_ticks_are_refused_and_a_book_at_the_limit_builds() {
        // A reference of 2^62 ticks fits an i64 but not the book's arithmetic (found by the
        // journal_reader fuzz target restoring such an instrument from a snapshot).
        let mut spec = btc();
        spec.tick_size = d("1");
        spec.reference_price = Decimal::from(1i64 << 62);
        assert!(matches!(
            Instrument::new(0, spec.clone()),
            Err(SpecError::OutOfRange {
                field: "reference_price",
                ..
            })
        ));
        // Within the limit but a band reaching past it.
        spec.reference_price = Decimal::from(MAX_TICKS);
        assert!(matches!(
            Instrument::new(0, spec.clone()),
            Err(SpecError::OutOfRange { field: "band", .. })
        ));
        // The highest band allowed builds a book on both sides, with any ladder width.
        spec.reference_price = Decimal::from(MAX_TICKS - (MAX_TICKS / 8));
        let i = Instrument::new(0, spec).unwrap();
        assert!(i.band_high <= MAX_TICKS);
        for ladder in [1, 4096, 1 << 18] {
            let book = crate::Book::new(i.clone(), ladder);
            assert_eq!(book.instrument.band_high, i.band_high);
        }
    }

    #[test]
    fn a_spec_whose_values_overflow_decimal_arithmetic_is_rejected_not_a_panic() {
        let mut spec = btc();
        spec.lot_size = Decimal::new(1, 28);
        spec.min_size = Decimal::MAX;
        spec.max_size = Decimal::MAX;
        assert!(matches!(
            Instrument::new(0, spec),
            Err(SpecError::OutOfRange {
                field: "min_size",
                ..
            })
        ));
        let mut spec = btc();
        spec.tick_size = Decimal::new(1, 28);
        spec.reference_price = Decimal::MAX;
        assert!(matches!(
            Instrument::new(0, spec),
            Err(SpecError::OutOfRange {
                field: "reference_price",
                ..
            })
        ));
        let mut spec = btc();
        // The reference price fits in ticks, the band's upper edge does not.
        spec.tick_size = Decimal::ONE;
        spec.reference_price = Decimal::from(MAX_TICKS);
        spec.band = Decimal::new(9, 1);
        assert!(matches!(
            Instrument::new(0, spec),
            Err(SpecError::OutOfRange { field: "band", .. })
        ));
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut spec = btc();
        spec.min_size = d("0.00005");
        let err = Instrument::new(0, spec).unwrap_err();
        assert!(err.to_string().contains("min_size"), "{err}");
        let mut spec = btc();
        spec.tick_size = d("0");
        assert!(matches!(
            Instrument::new(0, spec),
            Err(SpecError::NotPositive {
                field: "tick_size",
                ..
            })
        ));
        let mut spec = btc();
        spec.symbol = "btc usd".into();
        assert!(matches!(
            Instrument::new(0, spec),
            Err(SpecError::BadSymbol(_))
        ));
        let mut spec = btc();
        spec.max_size = d("0.0001");
        spec.min_size = d("1");
        assert!(matches!(
            Instrument::new(0, spec),
            Err(SpecError::MinAboveMax { .. })
        ));
    }
}
