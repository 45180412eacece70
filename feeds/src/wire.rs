//! Wire helpers: exact decimal strings from integer ticks and lots, and a minimal JSON object
//! writer. Messages are encoded once and shared, so the writer appends to a plain `Vec<u8>`
//! with no intermediate values.

use rust_decimal::Decimal;

/// Converts integer ticks or lots to exact decimal strings in the instrument's scale:
/// `units × step`, where `step` is the tick or lot size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    mantissa: i128,
    scale: u32,
}

impl Scale {
    pub fn new(step: Decimal) -> Self {
        Scale {
            mantissa: step.mantissa(),
            scale: step.scale(),
        }
    }

    /// The scale of products of the two steps (a price times a size), exact whatever the
    /// steps' digits (a `Decimal` product would round past 28 of them).
    pub fn product(self, other: Scale) -> Scale {
        Scale {
            mantissa: self.mantissa.saturating_mul(other.mantissa),
            scale: self.scale + other.scale,
        }
    }

    /// `units × step` in units of the last fractional digit: the wire string's digits.
    pub fn unscaled(&self, units: i64) -> i128 {
        units as i128 * self.mantissa
    }

    /// Appends `units × step` with exactly `scale` fractional digits.
    pub fn write(&self, units: i64, out: &mut Vec<u8>) {
        self.write_wide(units as i128, out);
    }

    /// [`write`](Self::write) for sums too wide for `i64` (position totals and notionals).
    /// Saturates at `i128`'s range: ~1.7e38 units of the last digit, beyond any sum of `i64`
    /// ticks times `u64` lots a market can reach.
    pub fn write_wide(&self, units: i128, out: &mut Vec<u8>) {
        let v = units.saturating_mul(self.mantissa);
        if v < 0 {
            out.push(b'-');
        }
        let mut digits = itoa::Buffer::new();
        let s = digits.format(v.unsigned_abs()).as_bytes();
        let scale = self.scale as usize;
        if scale == 0 {
            out.extend_from_slice(s);
        } else if s.len() > scale {
            let (int, frac) = s.split_at(s.len() - scale);
            out.extend_from_slice(int);
            out.push(b'.');
            out.extend_from_slice(frac);
        } else {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', scale - s.len()));
            out.extend_from_slice(s);
        }
    }

    pub fn to_string(self, units: i64) -> String {
        self.to_string_wide(units as i128)
    }

    pub fn to_string_wide(self, units: i128) -> String {
        let mut out = Vec::with_capacity(24);
        self.write_wide(units, &mut out);
        String::from_utf8(out).expect("digits are ASCII")
    }

    /// `units × step` as a `Decimal`, when it fits one.
    pub fn decimal(&self, units: i128) -> Option<Decimal> {
        let digits = units.checked_mul(self.mantissa)?;
        Decimal::try_from_i128_with_scale(digits, self.scale).ok()
    }

    /// Decimal places of the step.
    pub fn scale(&self) -> u32 {
        self.scale
    }
}

/// Appends a JSON object field by field: `{"a":1,"b":"x"}`.
pub struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string value; escapes what JSON requires.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_json_string(value, self.out);
        self
    }

    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    pub fn i64(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(b"null");
        self
    }

    /// A decimal string `"123.45"` of `units × step`.
    pub fn decimal(&mut self, key: &str, scale: Scale, units: i64) -> &mut Self {
        self.key(key);
        self.out.push(b'"');
        scale.write(units, self.out);
        self.out.push(b'"');
        self
    }

    /// A decimal string `"123.45"` of `units × step`, for sums wider than `i64`.
    pub fn decimal_wide(&mut self, key: &str, scale: Scale, units: i128) -> &mut Self {
        self.key(key);
        self.out.push(b'"');
        scale.write_wide(units, self.out);
        self.out.push(b'"');
        self
    }

    /// A decimal string, or `null` when absent.
    pub fn opt_decimal(&mut self, key: &str, scale: Scale, units: Option<i64>) -> &mut Self {
        match units {
            Some(u) => self.decimal(key, scale, u),
            None => self.null(key),
        }
    }

    /// A value written by `f` (an array or nested object) under `key`.
    pub fn raw_with(&mut self, key: &str, f: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        f(self.out);
        self
    }

    pub fn finish(&mut self) {
        self.out.push(b'}');
    }
}

pub fn write_json_string(value: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    // Names, symbols and reasons never need escaping: copy them whole.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    #[test]
    fn writes_in_the_step_scale() {
        let tick = Scale::new(Decimal::from_str("0.01").unwrap());
        assert_eq!(tick.to_string(5_000_025), "50000.25");
        assert_eq!(tick.to_string(5), "0.05");
        assert_eq!(tick.to_string(0), "0.00");
        assert_eq!(tick.to_string(-150), "-1.50");
        let five = Scale::new(Decimal::from_str("5").unwrap());
        assert_eq!(five.to_string(3), "15");
        let half = Scale::new(Decimal::from_str("0.5").unwrap());
        assert_eq!(half.to_string(3), "1.5");
    }

    proptest! {
        #[test]
        fn matches_rust_decimal(units in -1_000_000_000i64..1_000_000_000, m in 1i64..1000, s in 0u32..9) {
            let step = Decimal::new(m, s);
            let mut expect = Decimal::from(units) * step;
            expect.rescale(s);
            prop_assert_eq!(Scale::new(step).to_string(units), expect.to_string());
        }
    }

    #[test]
    fn wide_sums_write_past_i64() {
        let notional = Scale::new(Decimal::from_str("0.0000001").unwrap());
        let units = i64::MAX as i128 * 1_000;
        assert_eq!(notional.to_string_wide(units), "922337203685477.5807000");
        assert_eq!(notional.to_string_wide(-units), "-922337203685477.5807000");
        assert_eq!(notional.to_string_wide(0), "0.0000000");
    }

    #[test]
    fn json_object_is_valid_json() {
        let mut out = Vec::new();
        let tick = Scale::new(Decimal::from_str("0.01").unwrap());
        JsonObject::new(&mut out)
            .str("type", "trade\"x\n")
            .u64("seq", 7)
            .i64("n", -3)
            .bool("ok", true)
            .decimal("price", tick, 12345)
            .opt_decimal("none", tick, None)
            .raw_with("arr", |o| o.extend_from_slice(b"[1,2]"))
            .finish();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "trade\"x\n");
        assert_eq!(v["price"], "123.45");
        assert_eq!(v["arr"][1], 2);
        assert!(v["none"].is_null());
    }
}
