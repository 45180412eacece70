//! A subscriber's replica of the depth book, kept from the wire's decimal strings, and the
//! checksum of docs/feeds.md computed from it: the load tool's proof that what it measured
//! was a correct book, not just bytes.

use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Levels the checksum covers per side.
const CHECKSUM_LEVELS: usize = 10;

/// One side: price → (price as sent, size as sent).
type Side = BTreeMap<Decimal, (String, String)>;

#[derive(Debug, Default)]
pub struct DepthReplica {
    bids: Side,
    asks: Side,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a decimal: {0:?}")]
pub struct BadDecimal(String);

impl DepthReplica {
    /// Replaces the book (a `snapshot`) or applies changed levels (an `update`; size zero
    /// removes the level).
    pub fn apply(
        &mut self,
        snapshot: bool,
        bids: &[(String, String)],
        asks: &[(String, String)],
    ) -> Result<(), BadDecimal> {
        if snapshot {
            self.bids.clear();
            self.asks.clear();
        }
        for (side, levels) in [(&mut self.bids, bids), (&mut self.asks, asks)] {
            for (price, size) in levels {
                let p = Decimal::from_str(price).map_err(|_| BadDecimal(price.clone()))?;
                let s = Decimal::from_str(size).map_err(|_| BadDecimal(size.clone()))?;
                if s.is_zero() {
                    side.remove(&p);
                } else {
                    side.insert(p, (price.clone(), size.clone()));
                }
            }
        }
        Ok(())
    }

    /// CRC-32 of the best 10 asks (lowest first) then the best 10 bids (highest first), each
    /// level's price then size as sent, without the decimal point and leading zeros.
    pub fn checksum(&self) -> u32 {
        let mut text = Vec::with_capacity(40 * CHECKSUM_LEVELS);
        let asks = self.asks.values().take(CHECKSUM_LEVELS);
        let bids = self.bids.values().rev().take(CHECKSUM_LEVELS);
        for (price, size) in asks.chain(bids) {
            for field in [price, size] {
                let digits = field.bytes().filter(|b| *b != b'.');
                text.extend(digits.skip_while(|b| *b == b'0'));
            }
        }
        crc32fast::hash(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(l: &[(&str, &str)]) -> Vec<(String, String)> {
        l.iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect()
    }

    #[test]
    fn matches_the_worked_example_of_the_feeds_docs() {
        // docs/feeds.md's worked example: zlib.crc32(b"5000052505000101000499999104999002500").
        let mut book = DepthReplica::default();
        book.apply(
            true,
            &levels(&[("49999.9", "0.010"), ("49990.0", "2.500")]),
            &levels(&[("50000.5", "0.250"), ("50001.0", "1.000")]),
        )
        .unwrap();
        assert_eq!(book.checksum(), 331_038_948);
    }

    #[test]
    fn an_update_with_size_zero_removes_the_level() {
        let mut book = DepthReplica::default();
        book.apply(true, &levels(&[("10.0", "1"), ("9.0", "2")]), &[])
            .unwrap();
        book.apply(false, &levels(&[("10.0", "0")]), &[]).unwrap();
        let mut expected = DepthReplica::default();
        expected.apply(true, &levels(&[("9.0", "2")]), &[]).unwrap();
        assert_eq!(book.checksum(), expected.checksum());
    }

    #[test]
    fn a_bad_decimal_is_an_error() {
        let mut book = DepthReplica::default();
        let err = book.apply(true, &levels(&[("ten", "1")]), &[]);
        assert_eq!(err, Err(BadDecimal("ten".into())));
    }
}
