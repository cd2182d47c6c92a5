//! A faithful port of NumPy's legacy `RandomState` stream: MT19937 with its
//! seeding, 53-bit `random_sample`, the masked-rejection bounded integers and
//! the Fisher-Yates `shuffle`/`permutation`/`choice` built on them. Only what
//! the scenarios need to reproduce python-paillier's data split bit for bit;
//! known-answer tests compare with values NumPy printed
//! (`tests/data/numpy_legacy_rng.json`, made by `python/numpy_vectors.py`).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// NumPy's legacy random state (`np.random.RandomState`), MT19937 underneath.
#[derive(Clone)]
pub struct RandomState {
    key: [u32; N],
    pos: usize,
}

impl std::fmt::Debug for RandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomState")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl RandomState {
    /// `RandomState(seed)` for an integer seed: MT19937's `init_genrand`.
    pub fn new(seed: u32) -> RandomState {
        let mut key = [0u32; N];
        key[0] = seed;
        for i in 1..N {
            let prev = key[i - 1];
            key[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        RandomState { key, pos: N }
    }

    /// `RandomState([k0, k1, ...])`: MT19937's `init_by_array`.
    #[cfg_attr(not(test), allow(dead_code))] // array seeds: not used by the scenarios yet
    pub fn from_key(init_key: &[u32]) -> RandomState {
        let mut st = RandomState::new(19_650_218);
        let key = &mut st.key;
        let len = init_key.len();
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(len) {
            let prev = key[i - 1];
            key[i] = (key[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(init_key.get(j).copied().unwrap_or(0))
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                key[0] = key[N - 1];
                i = 1;
            }
            if j >= len {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = key[i - 1];
            key[i] =
                (key[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                key[0] = key[N - 1];
                i = 1;
            }
        }
        // Ensures a non-zero initial state, as the reference code does.
        key[0] = 0x8000_0000;
        st.pos = N;
        st
    }

    /// The internal key words (what NumPy's `get_state()[1]` shows).
    #[cfg(test)]
    pub fn key(&self) -> &[u32; N] {
        &self.key
    }

    fn generate(&mut self) {
        let key = &mut self.key;
        for i in 0..N {
            let y = (key[i] & UPPER_MASK) | (key[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            key[i] = key[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// Next raw 32-bit output (tempered).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// Next 64-bit output: two 32-bit outputs, the first as the high half.
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// `random_sample()`: a double in [0, 1) with 53 random bits.
    #[cfg_attr(not(test), allow(dead_code))] // part of the verified port; splits need only integers
    pub fn random_sample(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) / 9_007_199_254_740_992.0
    }

    /// Uniform integer in `[0, max]` by masked rejection (NumPy's legacy
    /// `random_interval`, `rk_interval` in older releases).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        } else {
            loop {
                let v = self.next_u64() & mask;
                if v <= max {
                    return v;
                }
            }
        }
    }

    /// In-place `shuffle`: Fisher-Yates from the end, `j = interval(i)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u64) as usize;
            items.swap(i, j);
        }
    }

    /// `permutation(n)`: a shuffled `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }

    /// `choice(n, size, replace=False)` in the legacy generator:
    /// `permutation(n)[:size]`. `None` when `size > n`.
    pub fn choice_without_replacement(&mut self, n: usize, size: usize) -> Option<Vec<usize>> {
        if size > n {
            return None;
        }
        let mut p = self.permutation(n);
        p.truncate(size);
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/numpy_legacy_rng.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn u64s(v: &Value) -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    }

    fn usizes(v: &Value) -> Vec<usize> {
        u64s(v).into_iter().map(|x| x as usize).collect()
    }

    #[test]
    fn matches_numpy_for_integer_seeds() {
        let v = vectors();
        let cases = v["int_seeds"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        for case in cases {
            let seed = case["seed"].as_u64().unwrap() as u32;
            let mut rs = RandomState::new(seed);
            let head: Vec<u64> = rs.key()[..4].iter().map(|&k| u64::from(k)).collect();
            assert_eq!(head, u64s(&case["key_head"]), "seed {seed}");
            assert_eq!(
                u64::from(rs.key()[N - 1]),
                case["key_tail"].as_u64().unwrap()
            );
            let raw: Vec<u64> = (0..8).map(|_| u64::from(rs.next_u32())).collect();
            assert_eq!(raw, u64s(&case["uint32"]), "seed {seed}");
            for expect in u64s(&case["random_sample_bits"]) {
                // Exact equality: the doubles are built from the same bits.
                assert_eq!(rs.random_sample().to_bits(), expect, "seed {seed}");
            }
            for iv in case["interval"].as_array().unwrap() {
                let max = iv["max"].as_u64().unwrap();
                let got: Vec<u64> = (0..5).map(|_| rs.interval(max)).collect();
                assert_eq!(got, u64s(&iv["values"]), "seed {seed} max {max}");
            }
            for n in [1usize, 2, 3, 10, 37] {
                let expect = usizes(&case["permutation"][n.to_string()]);
                assert_eq!(rs.permutation(n), expect, "seed {seed} n {n}");
            }
            let ch = rs.choice_without_replacement(100, 7).unwrap();
            assert_eq!(ch, usizes(&case["choice_100_7"]), "seed {seed}");
        }
    }

    #[test]
    fn matches_numpy_for_array_seed() {
        let v = vectors();
        let case = &v["array_seed"];
        let key: Vec<u32> = u64s(&case["key"]).into_iter().map(|k| k as u32).collect();
        let mut rs = RandomState::from_key(&key);
        let head: Vec<u64> = rs.key()[..4].iter().map(|&k| u64::from(k)).collect();
        assert_eq!(head, u64s(&case["key_head"]));
        for expect in u64s(&case["random_sample_bits"]) {
            assert_eq!(rs.random_sample().to_bits(), expect);
        }
    }

    #[test]
    fn reproduces_the_python_paillier_split_indices() {
        let v = vectors();
        let case = &v["diabetes_split_seed_42"];
        let mut rs = RandomState::new(42);
        assert_eq!(rs.permutation(442), usizes(&case["permutation"]));
        assert_eq!(
            rs.choice_without_replacement(442, 50).unwrap(),
            usizes(&case["test_idx"])
        );
    }

    #[test]
    fn choice_larger_than_population_is_refused() {
        assert!(RandomState::new(1)
            .choice_without_replacement(3, 4)
            .is_none());
        assert_eq!(
            RandomState::new(1).choice_without_replacement(3, 0),
            Some(vec![])
        );
    }

    #[test]
    fn interval_stays_in_range() {
        let mut rs = RandomState::new(7);
        for max in [1u64, 2, 3, 6, 1000, (1 << 33) + 5] {
            for _ in 0..200 {
                assert!(rs.interval(max) <= max);
            }
        }
    }
}
