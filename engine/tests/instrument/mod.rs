//! The instrument of the engine's scenario tests: whole units, so every price and size in a
//! test reads as itself (the unit tests in `src/` use `instrument::tests::whole_units`).

use rust_decimal::Decimal;
use ticker_engine::InstrumentSpec;

/// Tick 1, lot 1, sizes 1..=1000, reference price 100, band ±10% (90..=110).
pub fn spec(symbol: &str) -> InstrumentSpec {
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
