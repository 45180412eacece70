//! The embedded defaults `tickerd` runs with when given no configuration.

use rust_decimal::Decimal;
use std::str::FromStr;
use ticker_engine::InstrumentSpec;
use ticker_feeds::{Instruments, WireInstrument};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("default decimal literal")
}

/// Instruments with realistic tick and lot sizes.
pub fn instruments() -> Vec<InstrumentSpec> {
    let spec = |symbol: &str, tick, lot, min, max, reference| InstrumentSpec {
        symbol: symbol.into(),
        tick_size: d(tick),
        lot_size: d(lot),
        min_size: d(min),
        max_size: d(max),
        reference_price: d(reference),
        band: d("0.10"),
    };
    vec![
        spec("BTC-USD", "0.01", "0.00001", "0.00001", "100", "65000"),
        spec("ETH-USD", "0.01", "0.0001", "0.0001", "1000", "3200"),
        spec("SOL-USD", "0.001", "0.01", "0.01", "100000", "150"),
        spec("EUR-USD", "0.00001", "1000", "1000", "100000000", "1.08"),
    ]
}

/// The default instruments as the fronts know them, numbered in order (what order entry and
/// the parsers are tested and fuzzed against).
pub fn wire_instruments() -> Instruments {
    let all = Instruments::default();
    for (i, spec) in instruments().into_iter().enumerate() {
        all.insert(WireInstrument::new(i as u32, spec).expect("default instruments are valid"));
    }
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_instruments_are_valid() {
        for (i, spec) in super::instruments().into_iter().enumerate() {
            ticker_engine::Instrument::new(i as u32, spec.clone())
                .unwrap_or_else(|e| panic!("{}: {e}", spec.symbol));
        }
    }
}
