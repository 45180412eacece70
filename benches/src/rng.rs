//! SplitMix64: a tiny, fast, seeded random number generator for workloads.
//!
//! Workloads must be identical for the same seed on every machine and every build, so they use
//! this fixed algorithm rather than a library whose output may change between versions. It is
//! not cryptographic; it only has to spread prices, sides and sizes evenly.

/// Steele, Lea and Flood's SplitMix64 (the seeding generator of `java.util.SplittableRandom`).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` by Lemire's multiply-shift (bias below `n / 2^64`). `n` must not be 0.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0, "below(0) has no value to return");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `percent / 100`.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_sequence_and_different_seeds_differ() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let mut r = SplitMix64::new(7);
        assert!(a.iter().all(|&x| x == r.next_u64()));
        let mut other = SplitMix64::new(8);
        assert_ne!(a[0], other.next_u64());
    }

    #[test]
    fn first_output_for_seed_zero_matches_the_reference_implementation() {
        // From the reference C implementation (Vigna, splitmix64.c) seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn between_stays_in_range_and_reaches_both_ends() {
        let mut r = SplitMix64::new(1);
        let draws: Vec<u64> = (0..10_000).map(|_| r.between(1, 50)).collect();
        assert!(draws.iter().all(|&d| (1..=50).contains(&d)));
        assert!(draws.contains(&1) && draws.contains(&50));
    }
}
