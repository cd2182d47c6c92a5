//! The training circuit: one description, evaluated by every backend.
//!
//! Every value the circuit touches is a *block*: an integer in `0..16`, the
//! full plaintext space (message and carry) of tfhe's `PARAM_MESSAGE_2_CARRY_2`
//! parameters. Blocks only meet two kinds of operation:
//!
//! * **linear**: sums and small scalar multiples, with the running maximum
//!   kept below 16 and the squared 2-norm of the combination at most 25 (the
//!   parameter set's noise bound of 5), both checked on every operation from
//!   public metadata, so a plan that passes in [`ClearBackend`] is valid
//!   under encryption too;
//! * **table lookups** ([`Table`]): one programmable bootstrap each, any
//!   function from 16 inputs to 16 outputs; a product of two small blocks is a
//!   lookup on `k a + b` (`b < k`).
//!
//! A [`Val`] carries its block plus public metadata: the largest raw value it
//! can hold, its noise weight, and an affine encoding `real = offset +
//! scale * raw`. Requantization is a lookup that reads the real value, applies a
//! function and rounds onto a new encoding, so the circuit is written in real
//! numbers while every step stays an exact integer table.
//!
//! [`Backend`] is what an evaluator implements; [`ClearBackend`] (Simulate)
//! and the tfhe backend (Execute) run the same [`train_batch`] and
//! [`infer`] and therefore agree bit for bit.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Size of a block's plaintext space (message x carry of the 2_2 parameters).
pub const SPACE: u8 = 16;
/// Largest raw value a block may hold.
pub const MAX_RAW: u8 = SPACE - 1;
/// Bound on the squared 2-norm of a linear combination between bootstraps
/// (the 2_2 parameters allow a 2-norm of 5).
pub const MAX_NORM2: u32 = 25;

/// A lookup table over the whole block space: one programmable bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    out: [u8; SPACE as usize],
}

impl Table {
    /// Builds a table from a function on raw inputs `0..=in_max`; inputs above
    /// `in_max` cannot occur and map to 0. Outputs must be below [`SPACE`].
    fn from_fn(in_max: u8, f: impl Fn(u8) -> u8) -> Table {
        let mut out = [0u8; SPACE as usize];
        for r in 0..=in_max {
            let v = f(r);
            assert!(v <= MAX_RAW, "table output {v} out of block range");
            out[r as usize] = v;
        }
        Table { out }
    }

    /// The output for raw input `r` (taken modulo the block space).
    pub fn get(&self, r: u8) -> u8 {
        self.out[(r % SPACE) as usize]
    }

    /// The full table.
    pub fn entries(&self) -> &[u8; SPACE as usize] {
        &self.out
    }
}

/// What an evaluator of the circuit must provide. `Ct` is one block.
pub trait Backend: Sync {
    /// One encrypted (or clear) block.
    type Ct: Clone + Send + Sync;

    /// `a += b` without any bootstrap.
    fn add_assign(&self, a: &mut Self::Ct, b: &Self::Ct);
    /// `a *= k` without any bootstrap.
    fn scalar_mul_assign(&self, a: &mut Self::Ct, k: u8);
    /// Applies independent lookups, one bootstrap each; implementations may
    /// run them in parallel. Output `i` is `jobs[i].1` applied to `jobs[i].0`.
    fn lookups(&self, jobs: &[(&Self::Ct, &Table)]) -> Vec<Self::Ct>;
    /// Number of bootstraps performed so far.
    fn pbs_count(&self) -> u64;
}

/// The cleartext evaluator of the exact integer circuit (`Fhe::Simulate`).
#[derive(Debug, Default)]
pub struct ClearBackend {
    pbs: AtomicU64,
}

impl ClearBackend {
    /// A fresh evaluator with a zero bootstrap count.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backend for ClearBackend {
    type Ct = u8;

    fn add_assign(&self, a: &mut u8, b: &u8) {
        *a = (*a + *b) % (2 * SPACE);
    }
    fn scalar_mul_assign(&self, a: &mut u8, k: u8) {
        *a = ((u16::from(*a) * u16::from(k)) % u16::from(2 * SPACE)) as u8;
    }
    fn lookups(&self, jobs: &[(&u8, &Table)]) -> Vec<u8> {
        self.pbs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        jobs.iter()
            .map(|(c, t)| {
                // The metadata checks guarantee this; a failure here is a bug
                // in the plan, never an input error.
                assert!(**c <= MAX_RAW, "lookup input {c} outside the block space");
                t.get(**c)
            })
            .collect()
    }
    fn pbs_count(&self) -> u64 {
        self.pbs.load(Ordering::Relaxed)
    }
}

/// Affine meaning of a block: `real = offset + scale * raw`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Enc {
    /// Real value of one raw step.
    pub scale: f64,
    /// Real value of raw 0.
    pub offset: f64,
}

impl Enc {
    /// The real value of a raw block value.
    pub fn real(&self, raw: u8) -> f64 {
        self.offset + self.scale * f64::from(raw)
    }

    /// A symmetric encoding of `[-bound, bound]` on raw `0..=max` (max even, so
    /// that 0 is exact at `max / 2`).
    fn symmetric(bound: f64, max: u8) -> Enc {
        let scale = 2.0 * bound / f64::from(max);
        Enc {
            scale,
            offset: -bound,
        }
    }

    /// Nearest raw value of `v` on a symmetric encoding, clipped to
    /// `0..=max`. Rounds relative to zero with ties to even, so positive and
    /// negative values round alike and a tie is rounded up as often as down
    /// (a `1/6` on a `1/3` grid goes to 0, a `1/2` to `2/3`).
    fn quantize(&self, v: f64, max: u8) -> u8 {
        let zero = (-self.offset / self.scale).round();
        ((v / self.scale).round_ties_even() + zero).clamp(0.0, f64::from(max)) as u8
    }
}

/// A block plus the public facts the circuit tracks about it.
#[derive(Debug, Clone)]
pub struct Val<C> {
    /// The block.
    pub ct: C,
    /// Largest raw value it can hold.
    pub max: u8,
    /// Squared 2-norm of the linear combination since the last bootstrap.
    pub norm2: u32,
    /// Its real meaning.
    pub enc: Enc,
}

/// Sums values that share a scale. Panics if the plan would overflow a block
/// or the noise bound: that is a bug in the plan, caught by the clear backend
/// before any encryption happens.
fn sum<B: Backend>(be: &B, vals: &[&Val<B::Ct>]) -> Val<B::Ct> {
    let first = vals[0];
    let mut out = first.clone();
    // Bookkeeping in u32: a u8 would wrap in release builds before the check.
    let mut max = u32::from(first.max);
    for v in &vals[1..] {
        assert_eq!(
            v.enc.scale, first.enc.scale,
            "summing values of different scales"
        );
        be.add_assign(&mut out.ct, &v.ct);
        max += u32::from(v.max);
        out.norm2 += v.norm2;
        out.enc.offset += v.enc.offset;
    }
    assert!(max <= u32::from(MAX_RAW), "sum can reach {max}");
    assert!(out.norm2 <= MAX_NORM2, "sum noise weight {}", out.norm2);
    out.max = max as u8;
    out
}

/// Packs two small values into one block `k a + b` for a bivariate lookup
/// (`b < k`, so the pair is recoverable).
fn pack<B: Backend>(be: &B, k: u8, a: &Val<B::Ct>, b: &Val<B::Ct>) -> B::Ct {
    assert!(b.max < k, "packing needs b < k");
    assert!(
        u32::from(k) * u32::from(a.max) + u32::from(b.max) <= u32::from(MAX_RAW),
        "packing overflows a block"
    );
    assert!(
        u32::from(k) * u32::from(k) * a.norm2 + b.norm2 <= MAX_NORM2,
        "packing noise weight"
    );
    let mut ct = a.ct.clone();
    be.scalar_mul_assign(&mut ct, k);
    be.add_assign(&mut ct, &b.ct);
    ct
}

/// Quantization and learning hyper-parameters that fix the circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitConfig {
    /// Features per row, not counting the bias.
    pub n_features: usize,
    /// Rows per mini-batch.
    pub batch_size: usize,
    /// SGD learning rate.
    pub learning_rate: f64,
    /// Allowed range of every weight (and the bias).
    pub parameters_range: (f64, f64),
    /// Number of levels of the master weights is `4 * (hi_max + 1)`;
    /// `hi_max <= 11` so a carry fits.
    pub hi_max: u8,
    /// Largest magnitude of the 5-level forward weight, whose levels are
    /// `{-s, -s/2, 0, s/2, s}`.
    pub forward_step: f64,
    /// Largest |real| the margin accumulator keeps, rounded to a multiple of
    /// the product step `s / 2` and at most [`ACC_HALF`] of them.
    pub forward_clip: f64,
    /// Largest |real| a gradient partial sum keeps when it is requantized.
    pub backward_clip: f64,
    /// Largest raw value of a requantized partial sum in the gradient
    /// reduction tree (2, 4 or 6): `tree_max + 1` levels over `[-clip, clip]`.
    /// Finer grids cost lookups: groups of `15 / tree_max` values per sum.
    pub tree_max: u8,
    /// Probabilities the four sigmoid output levels stand for.
    pub sigmoid_levels: [f64; 4],
}

impl CircuitConfig {
    /// Defaults for `n_features` features and batch size `batch_size`.
    pub fn new(n_features: usize, batch_size: usize) -> Self {
        CircuitConfig {
            n_features,
            batch_size,
            learning_rate: 0.3,
            parameters_range: (-1.0, 1.0),
            hi_max: 11,
            forward_step: 1.0,
            forward_clip: 2.5,
            backward_clip: 2.0,
            tree_max: 4,
            sigmoid_levels: [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0],
        }
    }

    /// Half-range of the margin accumulator in product steps `s / 2`.
    fn acc_half(&self) -> u8 {
        let steps = (self.forward_clip / (self.forward_step / 2.0)).round();
        if steps.is_finite() && steps >= 1.0 {
            (steps as u8).min(ACC_HALF)
        } else {
            0
        }
    }

    fn validate(&self) -> Result<()> {
        if self.n_features == 0 {
            return Err(Error::Config("need at least one feature".into()));
        }
        if self.batch_size == 0 || self.batch_size > 64 {
            return Err(Error::Config(format!(
                "batch size {} is not in 1..=64",
                self.batch_size
            )));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::Config(format!(
                "learning rate {} must be positive",
                self.learning_rate
            )));
        }
        let (lo, hi) = self.parameters_range;
        if !(lo.is_finite() && hi.is_finite() && lo < 0.0 && hi > 0.0) {
            return Err(Error::Config(format!(
                "parameters range ({lo}, {hi}) must contain 0 strictly inside"
            )));
        }
        if self.hi_max == 0 || self.hi_max > 11 {
            return Err(Error::Config(format!(
                "hi_max {} not in 1..=11",
                self.hi_max
            )));
        }
        // Even so that 0 is exact; at most 6 so that two values still fit a
        // block and every tree level shrinks.
        if ![2, 4, 6].contains(&self.tree_max) {
            return Err(Error::Config(format!(
                "tree_max {} is not 2, 4 or 6",
                self.tree_max
            )));
        }
        for (name, v) in [
            ("forward_step", self.forward_step),
            ("forward_clip", self.forward_clip),
            ("backward_clip", self.backward_clip),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Config(format!("{name} {v} must be positive")));
            }
        }
        if self.acc_half() == 0 {
            return Err(Error::Config(format!(
                "forward_clip {} is less than one product step {}",
                self.forward_clip,
                self.forward_step / 2.0
            )));
        }
        Ok(())
    }
}

/// Levels of every feature index (and of the bias column, whose value is
/// always index 2, i.e. 1.0, or index 0 after the label flip).
pub const X_LEVELS: [f64; 3] = [-1.0, 0.0, 1.0];
/// Feature indices per column: `0..X_INDICES`.
pub const X_INDICES: u8 = 3;
/// Forward weight indices: `0..FWD_INDICES` for `{-s, -s/2, 0, s/2, s}`.
pub const FWD_INDICES: u8 = 5;
/// Most product steps either side of 0 the margin accumulator keeps: its
/// raw range `0..=2 * ACC_HALF` plus one product (`0..=4`) fits a block.
pub const ACC_HALF: u8 = 5;

/// Everything derived from a [`CircuitConfig`]: encodings and tables. Both the
/// data owner and the server build the same plan from the same config.
#[derive(Debug, Clone)]
pub struct Plan {
    config: CircuitConfig,
    /// Weight step.
    delta: f64,
    /// Master weight index of 0.0.
    zero_index: u16,
    /// Encoding of a forward product (x * forward weight), raw `0..=4`.
    fprod_enc: Enc,
    /// Forward product table (on `3 f + x`).
    fprod: Table,
    /// Encoding of the margin accumulator, raw `0..=2 acc_half`.
    acc_enc: Enc,
    /// Its raw maximum.
    acc_max: u8,
    /// Encoding of a backward product (x * sigmoid level), raw `0..=6`.
    bprod_enc: Enc,
    /// Backward product table (on `4 x + a`).
    bprod: Table,
    /// Carry of `lo + update` (offset by 2) and its new low digit.
    carry: Table,
    low: Table,
    /// Largest |update| in weight steps; also the update's raw offset.
    update_max: u8,
}

const FPROD_MAX: u8 = 4;
const BPROD_MAX: u8 = 6;
/// Levels of the low digit of a master weight.
pub const LO_LEVELS: u8 = 4;

impl Plan {
    /// Derives the plan; fails on an invalid config.
    pub fn new(config: CircuitConfig) -> Result<Plan> {
        config.validate()?;
        let (wlo, whi) = config.parameters_range;
        let levels = u16::from(config.hi_max + 1) * u16::from(LO_LEVELS);
        let delta = (whi - wlo) / f64::from(levels - 1);
        let zero_index = (-wlo / delta).round() as u16;
        let s = config.forward_step;
        let fprod_enc = Enc::symmetric(s, FPROD_MAX);
        // Input 3 f + x: forward index f in 0..5, feature index x in 0..3.
        let fprod = Table::from_fn(FWD_INDICES * X_INDICES - 1, |r| {
            let (fi, xi) = (r / X_INDICES, r % X_INDICES);
            let fw = s / 2.0 * (f64::from(fi) - 2.0);
            fprod_enc.quantize(X_LEVELS[usize::from(xi)] * fw, FPROD_MAX)
        });
        let half = config.acc_half();
        // The product's scale exactly, so accumulator and products can be summed.
        let acc_enc = Enc {
            scale: fprod_enc.scale,
            offset: -f64::from(half) * fprod_enc.scale,
        };
        let bprod_enc = Enc::symmetric(1.0, BPROD_MAX);
        let a_levels = config.sigmoid_levels;
        // Input 4 x + a: feature index x in 0..3, sigmoid index a in 0..4.
        let bprod = Table::from_fn(4 * (X_INDICES - 1) + 3, |r| {
            let (xi, ai) = (r / 4, r % 4);
            bprod_enc.quantize(
                X_LEVELS[usize::from(xi)] * a_levels[usize::from(ai)],
                BPROD_MAX,
            )
        });
        // Update: lo + d in 0..=15 with d = delta_steps + update_max.
        let update_max = (MAX_RAW - (LO_LEVELS - 1)) / 2;
        let carry = Table::from_fn(MAX_RAW, |r| {
            let v = i16::from(r) - i16::from(update_max);
            (v.div_euclid(i16::from(LO_LEVELS)) + 2) as u8
        });
        let low = Table::from_fn(MAX_RAW, |r| {
            let v = i16::from(r) - i16::from(update_max);
            v.rem_euclid(i16::from(LO_LEVELS)) as u8
        });
        Ok(Plan {
            config,
            delta,
            zero_index,
            fprod_enc,
            fprod,
            acc_enc,
            acc_max: 2 * half,
            bprod_enc,
            bprod,
            carry,
            low,
            update_max,
        })
    }

    /// The config this plan was derived from.
    pub fn config(&self) -> &CircuitConfig {
        &self.config
    }

    /// Columns per row: the features plus the bias column.
    pub fn n_columns(&self) -> usize {
        self.config.n_features + 1
    }

    /// Number of master weight levels.
    pub fn weight_levels(&self) -> u16 {
        u16::from(self.config.hi_max + 1) * u16::from(LO_LEVELS)
    }

    /// Real value of a master weight index.
    pub fn weight_value(&self, index: u16) -> f64 {
        self.config.parameters_range.0 + self.delta * f64::from(index)
    }

    /// Nearest master weight index of a real weight (clipped to the range).
    pub fn weight_index(&self, w: f64) -> u16 {
        let (lo, _) = self.config.parameters_range;
        ((w - lo) / self.delta)
            .round()
            .clamp(0.0, f64::from(self.weight_levels() - 1)) as u16
    }

    /// Index of a zero weight.
    pub fn zero_index(&self) -> u16 {
        self.zero_index
    }

    /// 5-level forward weight (0..=4 for -s, -s/2, 0, s/2, s) of a high
    /// digit.
    fn forward_of_hi(&self, hi: u8) -> u8 {
        // Use the bucket centre so the forward weight does not depend on lo.
        let w = self.weight_value(u16::from(hi) * u16::from(LO_LEVELS) + 1) + self.delta / 2.0;
        let h = self.config.forward_step / 2.0;
        ((w / h).round().clamp(-2.0, 2.0) + 2.0) as u8
    }

    /// Splits a weight index into its `(hi, lo, forward)` blocks.
    pub fn weight_blocks(&self, index: u16) -> (u8, u8, u8) {
        let hi = (index / u16::from(LO_LEVELS)) as u8;
        let lo = (index % u16::from(LO_LEVELS)) as u8;
        (hi, lo, self.forward_of_hi(hi))
    }

    /// Joins `(hi, lo)` blocks into a weight index.
    pub fn weight_index_of(&self, hi: u8, lo: u8) -> u16 {
        u16::from(hi) * u16::from(LO_LEVELS) + u16::from(lo)
    }

    /// Sigmoid level index (0..4) of a real margin.
    fn sigmoid_index(&self, m: f64) -> u8 {
        let p = 1.0 / (1.0 + (-m).exp());
        let lv = &self.config.sigmoid_levels;
        let mut best = 0;
        for k in 1..4 {
            if (p - lv[k]).abs() < (p - lv[best]).abs() {
                best = k;
            }
        }
        best as u8
    }

    /// The probability a sigmoid level stands for.
    pub fn sigmoid_level(&self, index: u8) -> f64 {
        self.config.sigmoid_levels[usize::from(index.min(3))]
    }
}

/// The encrypted (or clear) model state the server carries across batches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WeightState<C> {
    /// High digit of each master weight, `0..=hi_max`.
    pub hi: Vec<C>,
    /// Low digit of each master weight, `0..4`.
    pub lo: Vec<C>,
    /// 5-level forward weight derived from `hi`, `0..=4`.
    pub fwd: Vec<C>,
}

/// One encrypted batch: 3-level feature indices (`0..3` for -1, 0, 1) of
/// `x * (1 - 2y)`, bias column last, so that the label never travels on its
/// own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchData<C> {
    /// `rows[i][j]`, `j < n_features + 1`.
    pub rows: Vec<Vec<C>>,
}

/// Reduces values of one encoding to one value by summing groups and
/// requantizing each group sum onto `tree_max` raw steps. Runs all rows'
/// reductions level by level so each level's lookups are one parallel call.
fn reduce_many<B: Backend>(
    be: &B,
    mut sets: Vec<Vec<Val<B::Ct>>>,
    clip: f64,
    tree_max: u8,
) -> Vec<Val<B::Ct>> {
    loop {
        // Can every set be summed directly?
        let done = sets.iter().all(|s| {
            s.iter().map(|v| u32::from(v.max)).sum::<u32>() <= u32::from(MAX_RAW)
                && s.iter().map(|v| v.norm2).sum::<u32>() <= MAX_NORM2
        });
        if done {
            return sets
                .iter()
                .map(|s| sum(be, &s.iter().collect::<Vec<_>>()))
                .collect();
        }
        let mut groups: Vec<(usize, Val<B::Ct>)> = Vec::new();
        for (si, s) in sets.iter().enumerate() {
            let g = usize::from(MAX_RAW / s[0].max).max(1);
            for chunk in s.chunks(g) {
                groups.push((si, sum(be, &chunk.iter().collect::<Vec<_>>())));
            }
        }
        let out_enc = Enc::symmetric(clip, tree_max);
        // A group whose requantization would be the identity (a lone value
        // already on the tree's encoding) skips its lookup.
        let tables: Vec<Option<Table>> = groups
            .iter()
            .map(|(_, v)| {
                let enc = v.enc;
                let t = Table::from_fn(v.max, |r| out_enc.quantize(enc.real(r), tree_max));
                let identity = enc == out_enc && (0..=v.max).all(|r| t.get(r) == r);
                (!identity).then_some(t)
            })
            .collect();
        let jobs: Vec<(&B::Ct, &Table)> = groups
            .iter()
            .zip(&tables)
            .filter_map(|((_, v), t)| t.as_ref().map(|t| (&v.ct, t)))
            .collect();
        let mut outs = be.lookups(&jobs).into_iter();
        let mut next: Vec<Vec<Val<B::Ct>>> = vec![Vec::new(); sets.len()];
        for ((si, v), t) in groups.into_iter().zip(&tables) {
            let val = match t {
                Some(_) => Val {
                    ct: outs.next().expect("one output per lookup"),
                    max: tree_max,
                    norm2: 1,
                    enc: out_enc,
                },
                None => v,
            };
            next[si].push(val);
        }
        sets = next;
    }
}

fn fresh<C>(ct: C, max: u8, enc: Enc) -> Val<C> {
    Val {
        ct,
        max,
        norm2: 1,
        enc,
    }
}

const INDEX_ENC: Enc = Enc {
    scale: 1.0,
    offset: 0.0,
};

/// Forward pass: margin sigmoid level (raw 0..4) of every row.
///
/// Each product `x_ij f_j` is one lookup on `3 f + x`, exact on the grid
/// `s / 2`. The margin is accumulated column by column in one block per row:
/// the first three products are summed (raw <= 12) and clipped onto the
/// accumulator (`+-acc_half` product steps, one lookup), then each further
/// product is added (raw <= 2 acc_half + 4 <= 14) and clipped again (one
/// lookup); the last sum goes straight into the sigmoid lookup. So the
/// margin is exact on the product grid while the partial sums stay within
/// the clip: `c - 2` lookups per row for `c >= 4` columns.
fn forward<B: Backend>(be: &B, plan: &Plan, fwd: &[B::Ct], rows: &[Vec<B::Ct>]) -> Vec<Val<B::Ct>> {
    let cols = plan.n_columns();
    let packed: Vec<B::Ct> = rows
        .iter()
        .flat_map(|row| {
            row.iter().zip(fwd).map(|(x, f)| {
                pack(
                    be,
                    X_INDICES,
                    &fresh(f.clone(), FWD_INDICES - 1, INDEX_ENC),
                    &fresh(x.clone(), X_INDICES - 1, INDEX_ENC),
                )
            })
        })
        .collect();
    let jobs: Vec<(&B::Ct, &Table)> = packed.iter().map(|c| (c, &plan.fprod)).collect();
    let prods: Vec<Val<B::Ct>> = be
        .lookups(&jobs)
        .into_iter()
        .map(|ct| fresh(ct, FPROD_MAX, plan.fprod_enc))
        .collect();
    let prods: Vec<&[Val<B::Ct>]> = prods.chunks(cols).collect();
    // Running sums, one per row, advanced one column at a time; every row
    // takes the same steps, so each step is one parallel call.
    let first = cols.min(3);
    let mut accs: Vec<Val<B::Ct>> = prods
        .iter()
        .map(|p| sum(be, &p[..first].iter().collect::<Vec<_>>()))
        .collect();
    let mut next = first;
    while next < cols {
        let clip_tables: Vec<Table> = accs
            .iter()
            .map(|a| {
                Table::from_fn(a.max, |r| {
                    plan.acc_enc.quantize(a.enc.real(r), plan.acc_max)
                })
            })
            .collect();
        let jobs: Vec<(&B::Ct, &Table)> = accs
            .iter()
            .zip(&clip_tables)
            .map(|(a, t)| (&a.ct, t))
            .collect();
        accs = be
            .lookups(&jobs)
            .into_iter()
            .zip(&prods)
            .map(|(ct, p)| sum(be, &[&fresh(ct, plan.acc_max, plan.acc_enc), &p[next]]))
            .collect();
        next += 1;
    }
    let tables: Vec<Table> = accs
        .iter()
        .map(|m| Table::from_fn(m.max, |r| plan.sigmoid_index(m.enc.real(r))))
        .collect();
    let jobs: Vec<(&B::Ct, &Table)> = accs.iter().zip(&tables).map(|(m, t)| (&m.ct, t)).collect();
    be.lookups(&jobs)
        .into_iter()
        .map(|ct| fresh(ct, 3, INDEX_ENC))
        .collect()
}

/// One SGD step on one batch. `rows` hold 3-level indices of `x * (1 - 2y)`
/// with the bias column last; the state is updated in place.
pub fn train_batch<B: Backend>(
    be: &B,
    plan: &Plan,
    state: &mut WeightState<B::Ct>,
    batch: &BatchData<B::Ct>,
) -> Result<()> {
    let cols = plan.n_columns();
    let rows = &batch.rows;
    // Only full batches: a short one would tell the server the row count.
    if rows.len() != plan.config.batch_size {
        return Err(Error::Shape(format!(
            "batch has {} rows, the plan's batch size is {}",
            rows.len(),
            plan.config.batch_size
        )));
    }
    if rows.iter().any(|r| r.len() != cols) || state.hi.len() != cols {
        return Err(Error::Shape(format!(
            "expected {cols} columns per row and per state"
        )));
    }
    let act = forward(be, plan, &state.fwd, rows);

    // Backward products x'_ij * a_i, then per-column reduction over rows.
    let packed: Vec<B::Ct> = (0..cols)
        .flat_map(|j| {
            rows.iter().zip(&act).map(move |(row, a)| {
                pack(be, 4, &fresh(row[j].clone(), X_INDICES - 1, INDEX_ENC), a)
            })
        })
        .collect();
    let jobs: Vec<(&B::Ct, &Table)> = packed.iter().map(|c| (c, &plan.bprod)).collect();
    let prods = be.lookups(&jobs);
    let sets: Vec<Vec<Val<B::Ct>>> = prods
        .chunks(rows.len())
        .map(|c| {
            c.iter()
                .map(|ct| fresh(ct.clone(), BPROD_MAX, plan.bprod_enc))
                .collect()
        })
        .collect();
    let grads = reduce_many(be, sets, plan.config.backward_clip, plan.config.tree_max);

    // Update in weight steps, offset by update_max, added to the low digit.
    let um = plan.update_max;
    let coef = plan.config.learning_rate / plan.config.batch_size as f64 / plan.delta;
    let tables: Vec<Table> = grads
        .iter()
        .map(|g| {
            Table::from_fn(g.max, |r| {
                let steps = (-coef * g.enc.real(r))
                    .round()
                    .clamp(-f64::from(um), f64::from(um));
                (steps + f64::from(um)) as u8
            })
        })
        .collect();
    let jobs: Vec<(&B::Ct, &Table)> = grads.iter().zip(&tables).map(|(g, t)| (&g.ct, t)).collect();
    let deltas = be.lookups(&jobs);
    let lo_sum: Vec<B::Ct> = state
        .lo
        .iter()
        .zip(&deltas)
        .map(|(lo, d)| {
            sum(
                be,
                &[
                    &fresh(lo.clone(), LO_LEVELS - 1, INDEX_ENC),
                    &fresh(d.clone(), 2 * um, INDEX_ENC),
                ],
            )
            .ct
        })
        .collect();
    let jobs: Vec<(&B::Ct, &Table)> = lo_sum
        .iter()
        .flat_map(|c| [(c, &plan.carry), (c, &plan.low)])
        .collect();
    let outs = be.lookups(&jobs);
    let (carries, lows): (Vec<_>, Vec<_>) =
        outs.chunks(2).map(|p| (p[0].clone(), p[1].clone())).unzip();
    // hi' = hi + carry + 2 in 0..=hi_max + 4, then clamp and forward weight.
    let hm = plan.config.hi_max;
    let clamp_t = Table::from_fn(hm + 4, |r| (i16::from(r) - 2).clamp(0, i16::from(hm)) as u8);
    let fwd_t = Table::from_fn(hm + 4, |r| {
        plan.forward_of_hi((i16::from(r) - 2).clamp(0, i16::from(hm)) as u8)
    });
    let hi_sum: Vec<B::Ct> = state
        .hi
        .iter()
        .zip(&carries)
        .map(|(h, c)| {
            sum(
                be,
                &[
                    &fresh(h.clone(), hm, INDEX_ENC),
                    &fresh(c.clone(), 4, INDEX_ENC),
                ],
            )
            .ct
        })
        .collect();
    let jobs: Vec<(&B::Ct, &Table)> = hi_sum
        .iter()
        .flat_map(|c| [(c, &clamp_t), (c, &fwd_t)])
        .collect();
    let outs = be.lookups(&jobs);
    state.hi = outs.iter().step_by(2).cloned().collect();
    state.fwd = outs.iter().skip(1).step_by(2).cloned().collect();
    state.lo = lows;
    Ok(())
}

/// Encrypted-inference circuit: sigmoid level (0..4) of each row. `rows` hold
/// plain 3-level feature indices (not label-flipped) with the bias column
/// last.
pub fn infer<B: Backend>(
    be: &B,
    plan: &Plan,
    state: &WeightState<B::Ct>,
    rows: &[Vec<B::Ct>],
) -> Result<Vec<B::Ct>> {
    let cols = plan.n_columns();
    if rows.iter().any(|r| r.len() != cols) || state.fwd.len() != cols {
        return Err(Error::Shape(format!(
            "expected {cols} columns per row and per state"
        )));
    }
    Ok(forward(be, plan, &state.fwd, rows)
        .into_iter()
        .map(|v| v.ct)
        .collect())
}

/// Index of the bias column's "feature" value 1.0.
pub const BIAS_ONE: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(features: usize, batch: usize) -> Plan {
        Plan::new(CircuitConfig::new(features, batch)).unwrap()
    }

    fn zero_state(p: &Plan) -> WeightState<u8> {
        let (hi, lo, fwd) = p.weight_blocks(p.zero_index());
        let n = p.n_columns();
        WeightState {
            hi: vec![hi; n],
            lo: vec![lo; n],
            fwd: vec![fwd; n],
        }
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let ok = CircuitConfig::new(3, 2);
        let mut c = ok.clone();
        c.hi_max = 12;
        assert!(Plan::new(c).is_err());
        let mut c = ok.clone();
        c.parameters_range = (0.5, 1.0);
        assert!(Plan::new(c).is_err());
        let mut c = ok.clone();
        c.forward_clip = 0.2;
        assert!(Plan::new(c).is_err());
        let mut c = ok.clone();
        c.forward_step = 0.0;
        assert!(Plan::new(c).is_err());
        let mut c = ok.clone();
        c.forward_clip = 10.0;
        assert_eq!(Plan::new(c).unwrap().acc_max, 2 * ACC_HALF);
        let mut c = ok;
        c.batch_size = 0;
        assert!(Plan::new(c).is_err());
    }

    #[test]
    fn weight_blocks_round_trip() {
        let p = plan(2, 2);
        for i in 0..p.weight_levels() {
            let (hi, lo, f) = p.weight_blocks(i);
            assert_eq!(p.weight_index_of(hi, lo), i);
            assert!(f < FWD_INDICES);
        }
        assert!(p.weight_value(p.zero_index()).abs() < 1e-9 + p.delta);
    }

    #[test]
    fn tables_cover_only_reachable_inputs() {
        let t = Table::from_fn(3, |r| r + 1);
        assert_eq!(t.entries()[..5], [1, 2, 3, 4, 0]);
        assert_eq!(t.get(16 + 2), 3);
    }

    #[test]
    #[should_panic(expected = "sum can reach")]
    fn overflowing_sum_is_caught_in_the_clear() {
        let be = ClearBackend::new();
        let v = fresh(9u8, 9, INDEX_ENC);
        sum(&be, &[&v, &v]);
    }

    /// Bootstraps per batch of 8 x 30, counted by running the circuit.
    #[test]
    fn bootstrap_count_of_the_reference_shape() {
        let p = plan(30, 8);
        let be = ClearBackend::new();
        let mut st = zero_state(&p);
        let batch = BatchData {
            rows: vec![vec![2u8; 31]; 8],
        };
        train_batch(&be, &p, &mut st, &batch).unwrap();
        // 248 forward products + 8 x 28 margin accumulator + 8 sigmoids + 248
        // backward products + 155 backward tree + 31 updates + 62 carry/low +
        // 62 clamp/forward.
        assert_eq!(be.pbs_count(), 1038);
    }

    #[test]
    fn a_predictive_feature_gets_a_positive_weight() {
        let p = plan(1, 4);
        let be = ClearBackend::new();
        let mut st = zero_state(&p);
        // x = +1 for y = 1 and -1 for y = 0; after the label flip every row
        // reads x' = -1 (index 0) and bias' = -1 for y = 1, +1 for y = 0.
        let batch = BatchData {
            rows: vec![vec![0, 0], vec![0, 2], vec![0, 0], vec![0, 2]],
        };
        for _ in 0..5 {
            train_batch(&be, &p, &mut st, &batch).unwrap();
        }
        let w = p.weight_value(p.weight_index_of(st.hi[0], st.lo[0]));
        assert!(w > 0.2, "weight {w}");
    }

    #[test]
    fn shape_errors_are_reported() {
        let p = plan(2, 2);
        let be = ClearBackend::new();
        let mut st = zero_state(&p);
        let too_many = BatchData {
            rows: vec![vec![0u8; 3]; 3],
        };
        assert!(train_batch(&be, &p, &mut st, &too_many).is_err());
        let short = BatchData {
            rows: vec![vec![0u8; 3]; 1],
        };
        assert!(train_batch(&be, &p, &mut st, &short).is_err());
        let narrow = BatchData {
            rows: vec![vec![0u8; 2]; 2],
        };
        assert!(train_batch(&be, &p, &mut st, &narrow).is_err());
        assert!(infer(&be, &p, &st, &[vec![0u8; 4]]).is_err());
    }

    proptest! {
        /// Any valid state and batch keeps every block in range and every
        /// linear combination under the noise bound, and the next state is
        /// valid again.
        #[test]
        fn circuit_stays_in_bounds(
            features in 1usize..6,
            rows in 1usize..5,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let p = plan(features, rows);
            let cols = p.n_columns();
            let mut st = WeightState { hi: vec![], lo: vec![], fwd: vec![] };
            for _ in 0..cols {
                let (h, l, f) = p.weight_blocks(rng.gen_range(0..p.weight_levels()));
                st.hi.push(h);
                st.lo.push(l);
                st.fwd.push(f);
            }
            let batch = BatchData {
                rows: (0..rows).map(|_| (0..cols).map(|_| rng.gen_range(0..X_INDICES)).collect()).collect(),
            };
            let be = ClearBackend::new();
            train_batch(&be, &p, &mut st, &batch).unwrap();
            for j in 0..cols {
                prop_assert!(st.hi[j] <= p.config().hi_max);
                prop_assert!(st.lo[j] < 4);
                prop_assert_eq!(st.fwd[j], p.forward_of_hi(st.hi[j]));
            }
            let levels = infer(&be, &p, &st, &batch.rows).unwrap();
            prop_assert!(levels.iter().all(|&l| l < 4));
        }
    }
}
