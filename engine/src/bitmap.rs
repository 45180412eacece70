//! A hierarchical bitmap: finds the first set bit at or after an index in a handful of word
//! operations, whatever the length. Each layer above the bottom holds one bit per word of the
//! layer below ("this word is non-zero"), so a search climbs at most `log64(len)` layers and
//! descends the same number.

#[derive(Clone, Debug)]
pub(crate) struct Bitmap {
    /// `layers[0]` is the bottom (one bit per index); the last layer is a single word.
    layers: Vec<Vec<u64>>,
    len: usize,
}

impl Bitmap {
    pub(crate) fn new(len: usize) -> Self {
        let mut layers = Vec::new();
        let mut n = len.max(1);
        loop {
            let words = n.div_ceil(64);
            layers.push(vec![0u64; words]);
            if words == 1 {
                break;
            }
            n = words;
        }
        Bitmap { layers, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Starts fetching the bottom word that holds bit `i` (what [`Bitmap::set`] and
    /// [`Bitmap::clear`] touch first).
    #[inline]
    pub(crate) fn prefetch(&self, i: usize) {
        crate::prefetch::prefetch(self.layers[0].as_ptr().wrapping_add(i / 64));
    }

    pub(crate) fn set(&mut self, i: usize) {
        debug_assert!(i < self.len);
        let mut i = i;
        for layer in &mut self.layers {
            let word = &mut layer[i / 64];
            let was_zero = *word == 0;
            *word |= 1 << (i % 64);
            if !was_zero {
                return;
            }
            i /= 64;
        }
    }

    pub(crate) fn clear(&mut self, i: usize) {
        debug_assert!(i < self.len);
        let mut i = i;
        for layer in &mut self.layers {
            let word = &mut layer[i / 64];
            *word &= !(1 << (i % 64));
            if *word != 0 {
                return;
            }
            i /= 64;
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, i: usize) -> bool {
        self.layers[0][i / 64] & (1 << (i % 64)) != 0
    }

    /// The lowest set index `>= from`, if any.
    pub(crate) fn first_set_from(&self, from: usize) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        // Climb: find the first layer whose word (from the position derived from `from`)
        // has a set bit at or after the position.
        let mut pos = from;
        let mut depth = 0;
        let found = loop {
            let layer = &self.layers[depth];
            let w = pos / 64;
            if w >= layer.len() {
                return None;
            }
            let bits = layer[w] & (!0u64 << (pos % 64));
            if bits != 0 {
                break w * 64 + bits.trailing_zeros() as usize;
            }
            depth += 1;
            if depth == self.layers.len() {
                return None;
            }
            pos = w + 1;
        };
        // Descend: take the lowest set bit of each word below.
        let mut idx = found;
        while depth > 0 {
            depth -= 1;
            let word = self.layers[depth][idx];
            debug_assert!(word != 0);
            idx = idx * 64 + word.trailing_zeros() as usize;
        }
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_bitmap_finds_nothing() {
        let b = Bitmap::new(1 << 20);
        assert_eq!(b.first_set_from(0), None);
        assert_eq!(b.first_set_from((1 << 20) - 1), None);
        assert_eq!(b.first_set_from(1 << 20), None);
    }

    #[test]
    fn finds_across_layers() {
        let mut b = Bitmap::new(1 << 20);
        b.set(5);
        b.set(700_000);
        assert_eq!(b.first_set_from(0), Some(5));
        assert_eq!(b.first_set_from(6), Some(700_000));
        assert_eq!(b.first_set_from(700_001), None);
        b.clear(5);
        assert_eq!(b.first_set_from(0), Some(700_000));
        b.clear(700_000);
        assert_eq!(b.first_set_from(0), None);
    }

    proptest! {
        #[test]
        fn matches_a_linear_scan(len in 1usize..20_000, ops in proptest::collection::vec((any::<bool>(), any::<usize>(), any::<usize>()), 1..200)) {
            let mut b = Bitmap::new(len);
            let mut model = vec![false; len];
            for (set, i, from) in ops {
                let i = i % len;
                if set { b.set(i); model[i] = true; } else { b.clear(i); model[i] = false; }
                let from = from % (len + 1);
                let expect = (from..len).find(|&j| model[j]);
                prop_assert_eq!(b.first_set_from(from), expect);
                prop_assert_eq!(b.get(i), model[i]);
            }
        }
    }
}
