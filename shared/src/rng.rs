//! A small counter-based random generator. Every random choice in the data pipeline is a
//! pure function of a key such as (seed, epoch, sample position), so any batch can be
//! regenerated exactly on resume without replaying the ones before it.

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and good enough for shuffles, crops
/// and mask positions. Not for cryptography.
#[derive(Debug, Clone)]
pub struct KeyedRng {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl KeyedRng {
    /// A generator determined by `key` alone; different keys give unrelated streams.
    pub fn new(key: &[u64]) -> Self {
        let mut state = GOLDEN_GAMMA;
        for &part in key {
            state = mix(state ^ mix(part.wrapping_add(GOLDEN_GAMMA)));
        }
        Self { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Uniform integer in 0..bound (bound > 0), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "empty range");
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let value = self.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }

    /// Uniform integer in low..=high.
    pub fn inclusive(&mut self, low: usize, high: usize) -> usize {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.below((high - low) as u64 + 1) as usize
    }

    /// Shuffles in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let pick = self.below(last as u64 + 1) as usize;
            items.swap(last, pick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_stream_and_keys_differ() {
        let draw = |key: &[u64]| {
            let mut rng = KeyedRng::new(key);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(&[1, 2, 3]), draw(&[1, 2, 3]));
        assert_ne!(draw(&[1, 2, 3]), draw(&[1, 2, 4]));
        assert_ne!(draw(&[1, 2, 3]), draw(&[2, 1, 3]));
    }

    #[test]
    fn inclusive_range_reaches_both_ends_evenly() {
        let mut rng = KeyedRng::new(&[7]);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[rng.inclusive(0, 4)] += 1;
        }
        // Each of 5 values expects 10,000; 4 standard deviations is ±358.
        for count in counts {
            assert!((9_642..=10_358).contains(&count), "{counts:?}");
        }
    }
}
