//! A small seeded generator (splitmix64): the same seed gives the same run on every machine
//! and every version of the dependencies.

/// splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability 1 / `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A length in `1..=max`, log-uniform: short lengths as often as long ones by magnitude.
    pub fn log_len(&mut self, max: usize) -> usize {
        let max = max.max(1);
        let bits = usize::BITS - max.leading_zeros();
        let top = 1usize << self.below(bits as usize + 1).min(usize::BITS as usize - 1);
        self.range(1, top.min(max))
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_cover_it() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let x = rng.below(10);
            seen[x] = true;
            let l = rng.log_len(1000);
            assert!((1..=1000).contains(&l));
            assert!((3..=5).contains(&rng.range(3, 5)));
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(Rng::new(1).next_u64(), Rng::new(1).next_u64(), "seeded");
    }
}
