//! The tree-structured Parzen estimator as Optuna 5.0's default `TPESampler` runs it: random startup trials,
//! a split of the finished trials into "below" (the best `min(ceil(0.1 n), 25)`) and "above", one Parzen
//! mixture per side (truncated Gaussians with neighbour-distance bandwidths and a wide prior kernel;
//! categorical kernels with a uniform prior share), and the candidate of `l(x)` with the highest `l(x)/g(x)`.
//! Multivariate by default: the parameters every finished trial shares are sampled jointly from product
//! kernels; the others fall back to one mixture per parameter. With the constant liar, RUNNING trials count as
//! "above" so parallel workers spread out.
//!
//! Values are Optuna's internal representation (the float; the int as a float; the categorical index).

mod group;

use crate::space::{Direction, Distribution, FrozenTrial, Space, State};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Optuna's `prior_weight` (deprecated as an argument in 4.9, fixed at 1.0).
const PRIOR_WEIGHT: f64 = 1.0;

#[derive(Debug, Clone, PartialEq)]
pub struct TpeSampler {
    pub seed: u64,
    pub n_startup_trials: usize,
    pub n_ei_candidates: usize,
    pub multivariate: bool,
    pub constant_liar: bool,
    /// With several objectives, MOTPE (see `motpe`); empty or one: the `direction` given to `sample`.
    pub directions: Vec<Direction>,
    /// Optuna's `group=True`: sample each group of parameters that always appear together jointly (see `group`).
    pub group: bool,
}

impl Default for TpeSampler {
    fn default() -> Self {
        TpeSampler { seed: 0, n_startup_trials: 10, n_ei_candidates: 24, multivariate: true, constant_liar: true, directions: Vec::new(), group: false }
    }
}

/// The generator of one trial: ChaCha streams are independent, so trial `number` always gets the same draws
/// whatever happened in the study before.
fn trial_rng(seed: u64, number: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(number);
    rng
}

impl TpeSampler {
    /// Optuna's `TPESampler(seed=seed)` for a study with `directions`: the multivariate TPE for one objective,
    /// the independent one (MOTPE) for several, as Optuna 5 defaults `multivariate`.
    ///
    /// ```
    /// use bz_optuna::space::Direction;
    /// use bz_optuna::tpe::TpeSampler;
    /// assert!(TpeSampler::new(0, vec![Direction::Minimize]).multivariate);
    /// assert!(!TpeSampler::new(0, vec![Direction::Minimize, Direction::Maximize]).multivariate);
    /// ```
    pub fn new(seed: u64, directions: Vec<Direction>) -> TpeSampler {
        TpeSampler { seed, multivariate: directions.len() <= 1, directions, ..TpeSampler::default() }
    }

    /// Samples internal values for every parameter of `space` for trial number `number`, given all trials of the
    /// study (any states; the trial being sampled is not among them). Deterministic for (seed, number, trials).
    pub fn sample(&self, space: &Space, trials: &[FrozenTrial], direction: Direction, number: u64) -> BTreeMap<String, f64> {
        let mut rng = trial_rng(self.seed, number);
        let mut out = BTreeMap::new();
        let finished = |t: &FrozenTrial| matches!(t.state, State::Complete | State::Pruned) && t.number != number;
        let n_finished = trials.iter().filter(|t| finished(t)).count();
        if n_finished < self.n_startup_trials {
            for (name, d) in space {
                out.insert(name.clone(), sample_random(d, &mut rng));
            }
            return out;
        }

        let mut considered: Vec<&FrozenTrial> =
            trials.iter().filter(|t| finished(t) || (self.constant_liar && t.state == State::Running && t.number != number)).collect();
        considered.sort_by_key(|t| t.number);
        let n = considered.iter().filter(|t| t.state != State::Running).count();
        let (below, above) = self.split(&considered, n, direction);
        if self.group && self.multivariate {
            return group::sample(self, space, (&below, &above), &considered, &mut rng);
        }

        let mut joint: Vec<(&str, &Distribution)> = Vec::new();
        let mut single: Vec<(&str, &Distribution)> = Vec::new();
        for (name, d) in space {
            if d.is_single() || !Spec::new(d).usable() {
                out.insert(name.clone(), sample_random(d, &mut rng));
            } else if self.multivariate && in_intersection(&considered, name, d) {
                joint.push((name, d));
            } else {
                single.push((name, d));
            }
        }
        if !joint.is_empty() {
            let values = self.sample_group(&joint, &below, &above, &mut rng);
            for ((name, _), v) in joint.iter().zip(values) {
                out.insert(name.to_string(), v);
            }
        }
        for p in single {
            if let Some(&v) = self.sample_group(&[p], &below, &above, &mut rng).first() {
                out.insert(p.0.to_string(), v);
            }
        }
        out
    }

    /// Below and above: with several objectives or any constraint, Optuna's general split (`motpe`).
    fn split<'a>(&self, considered: &[&'a FrozenTrial], n: usize, direction: Direction) -> (Vec<&'a FrozenTrial>, Vec<&'a FrozenTrial>) {
        if self.directions.len() > 1 {
            crate::motpe::split(considered, crate::motpe::gamma_multi(n), &self.directions)
        } else if considered.iter().any(|t| !t.constraints.is_empty()) {
            crate::motpe::split(considered, default_gamma(n), &[direction])
        } else {
            split_trials(considered, default_gamma(n), direction)
        }
    }

    /// One TPE step over `params` jointly: candidates from l(x), the one maximising log l(x) − log g(x).
    fn sample_group(&self, params: &[(&str, &Distribution)], below: &[&FrozenTrial], above: &[&FrozenTrial], rng: &mut ChaCha8Rng) -> Vec<f64> {
        let specs: Vec<Spec> = params.iter().map(|(_, d)| Spec::new(d)).collect();
        let l = Mixture::new(&specs, &observations(below, params));
        let g = Mixture::new(&specs, &observations(above, params));
        let n = self.n_ei_candidates.max(1);
        let mut best: Option<(f64, Vec<f64>)> = None;
        let mut buf = Vec::new();
        // On a grid (ints, steps, categories) candidates repeat; scoring one costs a mass per component, so
        // each distinct candidate is scored once. Scoring draws nothing, so the samples are unchanged.
        let mut scored: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let x = l.sample(&specs, rng);
            let score = match scored.iter().find(|(y, _)| *y == x) {
                Some((_, score)) => *score,
                None => {
                    let score = l.log_pdf(&specs, &x, &mut buf) - g.log_pdf(&specs, &x, &mut buf);
                    // NaN never wins (np.argmax would pick it; a NaN score only arises from a degenerate mixture).
                    let score = if score.is_nan() { f64::NEG_INFINITY } else { score };
                    scored.push((x.clone(), score));
                    score
                }
            };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, x));
            }
        }
        match best {
            Some((_, x)) => x,
            None => params.iter().map(|(_, d)| sample_random(d, rng)).collect(),
        }
    }
}

/// `default_gamma`: how many trials form l(x) (single objective).
fn default_gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// `default_weights`: recent trials weigh 1, older ones (beyond the last 25) ramp up from 1/n.
fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let start = 1.0 / n as f64;
    let mut w: Vec<f64> = (0..ramp).map(|i| if ramp == 1 { start } else { start + (1.0 - start) * i as f64 / (ramp - 1) as f64 }).collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// Whether `name` is in Optuna's intersection search space with distribution `d`: every finished trial (and
/// at least one) has it with exactly that distribution.
fn in_intersection(trials: &[&FrozenTrial], name: &str, d: &Distribution) -> bool {
    let mut finished = trials.iter().filter(|t| matches!(t.state, State::Complete | State::Pruned)).peekable();
    finished.peek().is_some() && finished.all(|t| t.params.get(name).is_some_and(|(_, td)| td == d))
}

/// Ranks for the split: lower is better. Non-finite objective values of complete trials rank last.
pub(crate) fn complete_key(t: &FrozenTrial, direction: Direction) -> f64 {
    match t.value {
        Some(v) if !v.is_nan() => match direction {
            Direction::Minimize => v,
            Direction::Maximize => -v,
        },
        _ => f64::INFINITY,
    }
}

/// Pruned trials: deeper last step first, then the better last intermediate value (NaN last).
pub(crate) fn pruned_key(t: &FrozenTrial, direction: Direction) -> (f64, f64) {
    match t.intermediate.iter().next_back() {
        None => (1.0, 0.0),
        Some((&step, &v)) => {
            let v = if v.is_nan() {
                f64::INFINITY
            } else {
                match direction {
                    Direction::Minimize => v,
                    Direction::Maximize => -v,
                }
            };
            (-(step as f64), v)
        }
    }
}

/// Splits into (below, above), each in trial-number order: complete trials by value fill "below" first, then
/// pruned ones by rank; running trials are always "above".
fn split_trials<'a>(trials: &[&'a FrozenTrial], n_below: usize, direction: Direction) -> (Vec<&'a FrozenTrial>, Vec<&'a FrozenTrial>) {
    let mut complete: Vec<&FrozenTrial> = trials.iter().copied().filter(|t| t.state == State::Complete).collect();
    let mut pruned: Vec<&FrozenTrial> = trials.iter().copied().filter(|t| t.state == State::Pruned).collect();
    let running = trials.iter().copied().filter(|t| t.state == State::Running);
    complete.sort_by(|a, b| complete_key(a, direction).total_cmp(&complete_key(b, direction)));
    pruned.sort_by(|a, b| {
        let (ka, kb) = (pruned_key(a, direction), pruned_key(b, direction));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    let nc = n_below.min(complete.len());
    let np = (n_below - nc).min(pruned.len());
    let mut below: Vec<&FrozenTrial> = complete[..nc].iter().chain(&pruned[..np]).copied().collect();
    let mut above: Vec<&FrozenTrial> = complete[nc..].iter().chain(&pruned[np..]).copied().chain(running).collect();
    below.sort_by_key(|t| t.number);
    above.sort_by_key(|t| t.number);
    (below, above)
}

/// One row per trial that has every parameter (a value stored under another distribution counts when it
/// means a valid value of the current one, as Optuna re-reads external values).
fn observations(trials: &[&FrozenTrial], params: &[(&str, &Distribution)]) -> Vec<Vec<f64>> {
    trials
        .iter()
        .filter_map(|t| {
            params
                .iter()
                .map(|(name, d)| {
                    let (v, td) = t.params.get(*name)?;
                    let v = if td == *d { Some(*v).filter(|v| in_bounds(d, *v)) } else { d.internal(&td.external(*v)) };
                    v.filter(|v| v.is_finite())
                })
                .collect::<Option<Vec<f64>>>()
        })
        .collect()
}

fn in_bounds(d: &Distribution, v: f64) -> bool {
    match d {
        Distribution::Float { low, high, .. } => v >= *low && v <= *high,
        Distribution::Int { low, high, .. } => v >= *low as f64 && v <= *high as f64,
        Distribution::Categorical { choices } => v >= 0.0 && (v as usize) < choices.len(),
    }
}

/// A distribution as the Parzen estimator sees it: numerical ones in a (possibly log) space whose bounds are
/// widened by half a step for discrete ones.
#[derive(Debug, Clone, Copy)]
enum Spec {
    Num { low: f64, high: f64, step: f64, log: bool, lo: f64, hi: f64 },
    Cat { n: usize },
}

impl Spec {
    fn new(d: &Distribution) -> Spec {
        let (low, high, step, log) = match d {
            Distribution::Float { low, high, log, step } => (*low, *high, step.filter(|s| *s > 0.0).unwrap_or(0.0), *log),
            Distribution::Int { low, high, log, step } => (*low as f64, *high as f64, (*step).max(1) as f64, *log),
            Distribution::Categorical { choices } => return Spec::Cat { n: choices.len() },
        };
        let (lo, hi) = (low - step / 2.0, high + step / 2.0);
        // A log scale needs positive bounds; Optuna rejects such spaces, here they degrade to linear.
        let log = log && lo > 0.0;
        let (lo, hi) = if log { (lo.ln(), hi.ln()) } else { (lo, hi) };
        Spec::Num { low, high, step, log, lo, hi }
    }
}

impl Spec {
    /// Whether kernels can be fitted (bounds that contradict each other or are not finite cannot be).
    fn usable(&self) -> bool {
        match *self {
            Spec::Num { lo, hi, .. } => lo.is_finite() && hi.is_finite() && (hi - lo).is_finite() && hi > lo,
            Spec::Cat { n } => n > 0,
        }
    }

    fn to_space(log: bool, x: f64) -> f64 {
        if log {
            x.ln()
        } else {
            x
        }
    }
}

/// Rounds to the step grid inside [low, high] (the top of the grid when `high` is off it).
fn snap(v: f64, low: f64, high: f64, step: f64) -> f64 {
    let k_max = ((high - low) / step + 1e-9).floor().max(0.0);
    let k = ((v - low) / step).round().clamp(0.0, k_max);
    low + k * step
}

/// Uniform random sampling of one distribution (also used by the startup phase and by the plugin's random sampler).
pub fn sample_random(d: &Distribution, rng: &mut impl Rng) -> f64 {
    if let Distribution::Categorical { choices } = d {
        return if choices.is_empty() { 0.0 } else { rng.random_range(0..choices.len()) as f64 };
    }
    let Spec::Num { low, high, step, log, lo, hi } = Spec::new(d) else { return 0.0 };
    if low.is_nan() || high.is_nan() || high <= low {
        return low;
    }
    let u: f64 = rng.random();
    // This form cannot overflow for ranges wider than f64::MAX.
    let x = lo * (1.0 - u) + hi * u;
    let x = if log { x.exp() } else { x };
    if step > 0.0 {
        snap(x, low, high, step)
    } else {
        x.clamp(low, high)
    }
}

/// A mixture of product kernels: `k` kernels (one per observation, the prior last), each a product over the
/// parameters of a truncated Gaussian or a categorical distribution.
struct Mixture {
    k: usize,
    /// Cumulative kernel weights, for choosing a kernel.
    cum_w: Vec<f64>,
    /// Per kernel: log weight plus the parts of the log density that do not depend on x.
    konst: Vec<f64>,
    dims: Vec<Dim>,
}

enum Dim {
    Num {
        mu: Vec<f64>,
        sigma: Vec<f64>,
    },
    /// `k × n` probabilities, row per kernel, and their logs.
    Cat {
        n: usize,
        p: Vec<f64>,
        log_p: Vec<f64>,
    },
}

impl Mixture {
    fn new(specs: &[Spec], obs: &[Vec<f64>]) -> Mixture {
        let n = obs.len();
        let mut w = default_weights(n);
        w.push(if n == 0 { 1.0 } else { PRIOR_WEIGHT });
        let total: f64 = w.iter().sum();
        let k = w.len();
        let mut konst: Vec<f64> = w.iter().map(|x| (x / total).ln()).collect();
        let mut acc = 0.0;
        let cum_w = w
            .iter()
            .map(|x| {
                acc += x / total;
                acc
            })
            .collect();
        let dims = specs
            .iter()
            .enumerate()
            .map(|(j, spec)| match *spec {
                Spec::Num { step, log, lo, hi, .. } => {
                    let mus: Vec<f64> = obs.iter().map(|row| Spec::to_space(log, row[j])).collect();
                    let (mut mu, mut sigma) = (mus.clone(), bandwidths(&mus, lo, hi));
                    mu.push(0.5 * (lo + hi));
                    sigma.push(hi - lo);
                    for i in 0..k {
                        let mass = log_gauss_mass((lo - mu[i]) / sigma[i], (hi - mu[i]) / sigma[i]);
                        // Continuous kernels are densities (so 1/σ); discrete ones are masses of grid cells.
                        konst[i] -= mass + if step > 0.0 { 0.0 } else { sigma[i].ln() + LN_SQRT_2PI };
                    }
                    Dim::Num { mu, sigma }
                }
                Spec::Cat { n: nc } => {
                    let nc = nc.max(1);
                    let mut p = vec![0.0; k * nc];
                    if n == 0 {
                        p.fill(1.0 / nc as f64);
                    } else {
                        let base = PRIOR_WEIGHT / k as f64;
                        for (i, row) in p.chunks_mut(nc).enumerate() {
                            row.fill(base);
                            if let Some(c) = obs.get(i).map(|o| o[j] as usize).filter(|c| *c < nc) {
                                row[c] += 1.0;
                            }
                            let s: f64 = row.iter().sum();
                            row.iter_mut().for_each(|x| *x /= s);
                        }
                    }
                    let log_p = p.iter().map(|x| x.ln()).collect();
                    Dim::Cat { n: nc, p, log_p }
                }
            })
            .collect();
        Mixture { k, cum_w, konst, dims }
    }

    fn sample(&self, specs: &[Spec], rng: &mut impl Rng) -> Vec<f64> {
        let u: f64 = rng.random();
        let i = self.cum_w.iter().position(|c| u < *c).unwrap_or(self.k - 1);
        self.dims
            .iter()
            .zip(specs)
            .map(|(dim, spec)| match (dim, *spec) {
                (Dim::Num { mu, sigma }, Spec::Num { low, high, step, log, lo, hi }) => {
                    let (m, s) = (mu[i], sigma[i]);
                    let z = trunc_std_normal((lo - m) / s, (hi - m) / s, rng.random());
                    let x = (m + s * z).clamp(lo, hi);
                    let x = if log { x.exp() } else { x };
                    if step > 0.0 {
                        snap(x, low, high, step)
                    } else {
                        x.clamp(low, high)
                    }
                }
                (Dim::Cat { n, p, .. }, _) => {
                    let u: f64 = rng.random();
                    let row = &p[i * n..(i + 1) * n];
                    let mut acc = 0.0;
                    row.iter()
                        .position(|x| {
                            acc += x;
                            u < acc
                        })
                        .unwrap_or(n - 1) as f64
                }
                _ => unreachable!("dims are built from specs"),
            })
            .collect()
    }

    /// log of the mixture density at `x` (internal values), up to the Jacobian of the log scale, which l and g
    /// share.
    fn log_pdf(&self, specs: &[Spec], x: &[f64], acc: &mut Vec<f64>) -> f64 {
        acc.clear();
        acc.extend_from_slice(&self.konst);
        for ((dim, spec), &xj) in self.dims.iter().zip(specs).zip(x) {
            match (dim, *spec) {
                (Dim::Num { mu, sigma }, Spec::Num { step, log, .. }) => {
                    if step > 0.0 {
                        let (l, r) = (Spec::to_space(log, xj - step / 2.0), Spec::to_space(log, xj + step / 2.0));
                        for ((a, m), s) in acc.iter_mut().zip(mu).zip(sigma) {
                            *a += log_gauss_mass((l - m) / s, (r - m) / s);
                        }
                    } else {
                        let t = Spec::to_space(log, xj);
                        for ((a, m), s) in acc.iter_mut().zip(mu).zip(sigma) {
                            let z = (t - m) / s;
                            *a -= 0.5 * z * z;
                        }
                    }
                }
                (Dim::Cat { n, log_p, .. }, _) => {
                    let c = (xj as usize).min(n - 1);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a += log_p[i * n + c];
                    }
                }
                _ => unreachable!("dims are built from specs"),
            }
        }
        let max = acc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return max;
        }
        max + acc.iter().map(|a| (a - max).exp()).sum::<f64>().ln()
    }
}

/// Per-observation bandwidths: the larger distance to the sorted neighbours (range ends count as neighbours,
/// except that the outermost observations use their inner neighbour), clipped to
/// [width / min(100, n + 2), width] (the "magic clip"; n + 1 kernels with the prior).
fn bandwidths(mus: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    let n = mus.len();
    let width = hi - lo;
    let min_sigma = width / (100.0f64).min(n as f64 + 2.0);
    // Equal values (common for discrete parameters) get different bandwidths depending on their order; a stable
    // sort keeps trial order. Optuna's np.argsort breaks such ties in an unspecified, machine-dependent order;
    // with a stable argsort its estimator equals this one to 1e-12.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| mus[*a].total_cmp(&mus[*b]));
    let sorted: Vec<f64> = order.iter().map(|i| mus[*i]).collect();
    let at = |p: isize| -> f64 {
        if p < 0 {
            lo
        } else if p as usize >= n {
            hi
        } else {
            sorted[p as usize]
        }
    };
    let mut sigma = vec![0.0; n];
    for (p, &i) in order.iter().enumerate() {
        let p = p as isize;
        let s = if n >= 2 && p == 0 {
            at(1) - at(0)
        } else if n >= 2 && p as usize == n - 1 {
            at(p) - at(p - 1)
        } else {
            (at(p) - at(p - 1)).max(at(p + 1) - at(p))
        };
        sigma[i] = s.clamp(min_sigma, width);
    }
    sigma
}

// ---- the standard normal distribution, with tails that stay accurate in log space ----

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;

/// Chebyshev coefficients (first one halved) of erfcx(t) = exp(t²)·erfc(t) on t ∈ [0, ∞) in the variable
/// y = (t − 4)/(t + 4) ∈ [−1, 1); computed for this crate with mpmath at 40 digits (120-node Chebyshev–Gauss
/// quadrature); the first dropped term is below 1e-19.
const ERFCX_CHEB: [f64; 26] = [
    0.2981017936936576,
    -0.42908644125580536,
    0.18027256568771055,
    -0.06523752449734899,
    0.020367256576744864,
    -0.005449087066459008,
    0.0012278515372606755,
    -0.0002246979421877305,
    3.068543113098951e-05,
    -2.3178234999468535e-06,
    -1.4628356484727578e-07,
    6.927830518748949e-08,
    -6.8831107633628464e-09,
    -6.858489149445451e-10,
    2.4593734989496684e-10,
    -7.814909174028096e-12,
    -5.889394733817263e-12,
    6.869230438567993e-13,
    1.255049258010826e-13,
    -2.8232509502798152e-14,
    -2.6031646343175433e-15,
    1.0249960195009234e-15,
    5.72841468125685e-17,
    -3.692875129327215e-17,
    -1.5725507296420274e-18,
    1.368806273864585e-18,
];

/// erfcx(t) = exp(t²)·erfc(t) for t ≥ 0: one Clenshaw sum, and the asymptotic series far out (where the
/// Chebyshev sum's absolute error would become a relative one).
fn erfcx(t: f64) -> f64 {
    if t > 100.0 {
        let r = 1.0 / (2.0 * t * t);
        return FRAC_1_SQRT_PI / t * (1.0 - r * (1.0 - 3.0 * r * (1.0 - 5.0 * r)));
    }
    let y = (t - 4.0) / (t + 4.0);
    let (mut b1, mut b2) = (0.0, 0.0);
    for c in ERFCX_CHEB[1..].iter().rev() {
        let b0 = 2.0 * y * b1 - b2 + c;
        b2 = b1;
        b1 = b0;
    }
    y * b1 - b2 + ERFCX_CHEB[0]
}

fn erfc(t: f64) -> f64 {
    if t.is_nan() {
        t
    } else if t < 0.0 {
        2.0 - erfc(-t)
    } else {
        (-t * t).exp() * erfcx(t)
    }
}

/// Φ(x).
fn norm_cdf(x: f64) -> f64 {
    // Beyond these, the result is 0 or 1 in f64 anyway (and this is the hot path of kernel building).
    if x < -38.5 {
        0.0
    } else if x > 8.5 {
        1.0
    } else {
        0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
    }
}

/// ln Φ(x), without underflow in the left tail.
fn log_norm_cdf(x: f64) -> f64 {
    if x < 0.0 {
        let t = -x * std::f64::consts::FRAC_1_SQRT_2;
        -t * t + erfcx(t).ln() - std::f64::consts::LN_2
    } else {
        (-norm_cdf(-x)).ln_1p()
    }
}

/// ln(Φ(b) − Φ(a)) for a ≤ b, working in whichever tail keeps the precision.
fn log_gauss_mass(a: f64, b: f64) -> f64 {
    fn log_diff(p: f64, q: f64) -> f64 {
        if q >= p {
            f64::NEG_INFINITY
        } else {
            p + (-(q - p).exp()).ln_1p()
        }
    }
    if b <= 0.0 {
        log_diff(log_norm_cdf(b), log_norm_cdf(a))
    } else if a > 0.0 {
        log_diff(log_norm_cdf(-a), log_norm_cdf(-b))
    } else {
        // A tail beyond 9σ holds < 1e-19 and cannot move the result.
        let tail = |x: f64| if x < -9.0 { 0.0 } else { norm_cdf(x) };
        (-tail(a) - tail(-b)).ln_1p()
    }
}

/// Φ⁻¹(p): Acklam's rational approximation (relative error ~1e-9) and one Halley step on Φ.
fn norm_ppf(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0);
    let x = if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // Φ(x) − p relative to the density, computed on the side of the smaller tail so it keeps its digits.
    let e = if x <= 0.0 { norm_cdf(x) - p } else { (1.0 - p) - norm_cdf(-x) };
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (0.5 * x * x).exp();
    let refined = x - u / (1.0 + 0.5 * x * u);
    if refined.is_finite() {
        refined
    } else {
        x
    }
}

/// The `u`-quantile of N(0, 1) truncated to [a, b], by inverting Φ on the side of the smaller tail.
fn trunc_std_normal(a: f64, b: f64, u: f64) -> f64 {
    if a.is_nan() || b.is_nan() || a >= b {
        return a;
    }
    if a > 0.0 {
        return -trunc_std_normal(-b, -a, 1.0 - u);
    }
    // Past 9σ a tail (< 1e-19) cannot move p = Φ(a) + u·mass at f64 precision when the interval holds the
    // mode (mass > 0.19); skipping it saves most of the Φ evaluations of candidate sampling.
    let tail = |x: f64| if x < -9.0 && b > 0.0 { 0.0 } else { norm_cdf(x) };
    let pa = tail(a);
    let x = if b <= 0.0 {
        let pb = norm_cdf(b);
        if pb - pa <= 0.0 {
            // The interval lies beyond what Φ resolves; nearly all its mass sits at its upper end.
            return b;
        }
        norm_ppf(pa + u * (pb - pa))
    } else {
        let pnb = tail(-b);
        let mass = 1.0 - pa - pnb;
        let p = pa + u * mass;
        if p < 0.5 {
            norm_ppf(p)
        } else {
            -norm_ppf(pnb + (1.0 - u) * mass)
        }
    };
    if x.is_nan() {
        return 0.5 * (a + b);
    }
    x.clamp(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trial(number: u64, state: State, value: Option<f64>, params: &[(&str, f64, &Distribution)]) -> FrozenTrial {
        FrozenTrial {
            number,
            state,
            value,
            params: params.iter().map(|(n, v, d)| (n.to_string(), (*v, (*d).clone()))).collect(),
            intermediate: BTreeMap::new(),
            values: value.into_iter().collect(),
            constraints: Vec::new(),
        }
    }

    fn all_kinds() -> Space {
        vec![
            ("f".into(), Distribution::Float { low: -3.0, high: 7.5, log: false, step: None }),
            ("flog".into(), Distribution::Float { low: 1e-5, high: 1e-1, log: true, step: None }),
            ("fstep".into(), Distribution::Float { low: 0.0, high: 0.5, log: false, step: Some(0.05) }),
            ("i".into(), Distribution::Int { low: -4, high: 9, log: false, step: 1 }),
            ("istep".into(), Distribution::Int { low: 2, high: 20, log: false, step: 3 }),
            ("ilog".into(), Distribution::Int { low: 16, high: 512, log: true, step: 1 }),
            ("c".into(), Distribution::Categorical { choices: vec![json!("sgd"), json!("adam"), json!(3)] }),
            ("single".into(), Distribution::Float { low: 2.0, high: 2.0, log: false, step: None }),
        ]
    }

    /// A study on `space` where each trial's value comes from `f` over its parameters.
    fn run(sampler: &TpeSampler, space: &Space, n: u64, direction: Direction, f: impl Fn(&BTreeMap<String, f64>) -> f64) -> Vec<FrozenTrial> {
        let mut trials = Vec::new();
        for number in 0..n {
            let p = sampler.sample(space, &trials, direction, number);
            for (name, d) in space {
                assert!(d.contains(p[name]), "{name} = {} outside {d:?} at trial {number}", p[name]);
            }
            let v = f(&p);
            trials.push(FrozenTrial {
                number,
                state: State::Complete,
                value: Some(v),
                params: space.iter().map(|(name, d)| (name.clone(), (p[name], d.clone()))).collect(),
                intermediate: BTreeMap::new(),
                values: vec![v],
                constraints: Vec::new(),
            });
        }
        trials
    }

    #[test]
    fn special_functions_match_references() {
        // math.erfc and statistics.NormalDist().inv_cdf of CPython.
        let erfc_ref = [
            (0.1, 0.8875370839817152),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (2.0, 0.004677734981047265),
            (2.5, 0.0004069520174449589),
            (3.0, 2.2090496998585438e-05),
            (4.0, 1.541725790028002e-08),
            (6.0, 2.1519736712498916e-17),
            (10.0, 2.088487583762545e-45),
            (26.0, 5.663192408856143e-296),
        ];
        for (t, r) in erfc_ref {
            assert!((erfc(t) / r - 1.0).abs() < 5e-14 * t.max(1.0).powi(2), "erfc({t}) = {} vs {r}", erfc(t));
            assert!((erfc(-t) - (2.0 - r)).abs() < 1e-15);
        }
        let ppf_ref = [
            (1e-300, -37.0470962993612),
            (1e-20, -9.262340089798405),
            (1e-5, -4.2648907939228256),
            (0.02, -2.0537489106318225),
            (0.3, -0.5244005127080407),
            (0.5, 0.0),
            (0.9, 1.2815515655446008),
            (0.999999, 4.753424308817089),
        ];
        for (p, r) in ppf_ref {
            assert!((norm_ppf(p) - r).abs() < 1e-9 * r.abs().max(1.0), "ppf({p}) = {} vs {r}", norm_ppf(p));
        }
        // The log tail agrees with the direct value where both are representable.
        for x in [-5.0001, -8.0, -20.0, -37.0] {
            let direct = norm_cdf(x).ln();
            assert!((log_norm_cdf(x) - direct).abs() < 1e-10 * direct.abs(), "{x}");
        }
        assert!((log_norm_cdf(-100.0) - (-5005.524208694205)).abs() < 1e-9);
        // Masses: whole line, halves, and a far-tail cell.
        assert!(log_gauss_mass(-40.0, 40.0).abs() < 1e-15);
        assert!((log_gauss_mass(-40.0, 0.0) - 0.5f64.ln()).abs() < 1e-14);
        assert!((log_gauss_mass(0.0, 40.0) - 0.5f64.ln()).abs() < 1e-14);
        let cell = log_gauss_mass(50.0, 50.01);
        assert!(cell.is_finite() && cell < -1200.0);
    }

    #[test]
    fn truncated_normal_quantiles_stay_inside_and_are_monotone() {
        for (a, b) in [(-1.0, 1.0), (-100.0, 0.0), (0.0, 100.0), (-0.3, 80.0), (2.0, 3.0), (-60.0, -59.0), (-0.01, 0.01)] {
            let mut last = f64::NEG_INFINITY;
            for i in 0..=200 {
                let x = trunc_std_normal(a, b, i as f64 / 200.0);
                assert!(x >= a && x <= b, "{x} outside [{a}, {b}]");
                assert!(x >= last, "not monotone in u on [{a}, {b}]");
                last = x;
            }
        }
        // The median of N(0, 1) on [-1, 1] is 0; on [0, ∞) it is Φ⁻¹(0.75).
        assert!(trunc_std_normal(-1.0, 1.0, 0.5).abs() < 1e-12);
        assert!((trunc_std_normal(0.0, 60.0, 0.5) - 0.674_489_750_196_081_7).abs() < 1e-9);
    }

    #[test]
    fn gamma_and_weights_follow_optuna() {
        assert_eq!([0, 1, 10, 11, 100, 250, 251, 1000].map(default_gamma), [0, 1, 1, 2, 10, 25, 25, 25]);
        assert_eq!(default_weights(3), vec![1.0; 3]);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-15 && (w[4] - 1.0).abs() < 1e-15 && w[5..].iter().all(|x| *x == 1.0));
        assert_eq!(default_weights(26), [vec![1.0 / 26.0], vec![1.0; 25]].concat());
    }

    #[test]
    fn bandwidths_use_neighbours_and_magic_clip() {
        // Sorted 1, 2, 6 in [0, 10]: 1 gets 1 (clipped up to 10 / 5), 2 gets max(1, 4), 6 gets its inner gap 4.
        let s = bandwidths(&[6.0, 1.0, 2.0], 0.0, 10.0);
        assert_eq!(s, vec![4.0, 2.0, 4.0]);
        // One observation: the larger distance to a range end.
        assert_eq!(bandwidths(&[3.0], 0.0, 10.0), vec![7.0]);
        // Duplicates get the minimum width / min(100, n + 2).
        let s = bandwidths(&[5.0, 5.0, 5.0], 0.0, 10.0);
        assert!(s.iter().all(|x| (*x - 2.0).abs() < 1e-12));
    }

    #[test]
    fn parzen_estimator_matches_optuna() {
        // Optuna 5.0's _ParzenEstimator on these observations: sigmas [4, 5/3, 4, 3.5, 10] for `a`, and
        // log_pdf -11.33474579771909 and -15.268977374367132 at the two points below.
        let space: Space = vec![
            ("a".into(), Distribution::Float { low: 0.0, high: 10.0, log: false, step: None }),
            ("b".into(), Distribution::Float { low: 1e-3, high: 10.0, log: true, step: None }),
            ("c".into(), Distribution::Int { low: 1, high: 19, log: false, step: 3 }),
            ("d".into(), Distribution::Categorical { choices: vec![json!("x"), json!("y"), json!("z")] }),
            ("e".into(), Distribution::Int { low: 2, high: 300, log: true, step: 1 }),
        ];
        let specs: Vec<Spec> = space.iter().map(|(_, d)| Spec::new(d)).collect();
        let obs = vec![vec![6.0, 0.01, 4.0, 0.0, 2.0], vec![1.0, 5.0, 1.0, 2.0, 17.0], vec![2.0, 0.002, 19.0, 2.0, 300.0], vec![9.5, 1.0, 10.0, 1.0, 40.0]];
        let m = Mixture::new(&specs, &obs);
        let Dim::Num { sigma, .. } = &m.dims[0] else { panic!() };
        let want = [4.0, 5.0 / 3.0, 4.0, 3.5, 10.0];
        assert!(sigma.iter().zip(want).all(|(s, w)| (s - w).abs() < 1e-12), "{sigma:?}");
        let mut buf = Vec::new();
        for (x, want) in [([0.5, 0.003, 7.0, 1.0, 3.0], -11.33474579771909), ([7.0, 2.0, 16.0, 2.0, 150.0], -15.268977374367132)] {
            let got = m.log_pdf(&specs, &x, &mut buf);
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
    }

    #[test]
    fn every_kind_stays_in_its_distribution() {
        let space = all_kinds();
        for seed in 0..3 {
            let sampler = TpeSampler { seed, ..TpeSampler::default() };
            let trials = run(&sampler, &space, 40, Direction::Minimize, |p| (p["f"] - 1.0).powi(2) + p["flog"].ln().abs() + p["i"] + p["c"]);
            assert_eq!(trials.len(), 40);
        }
        let sampler = TpeSampler { multivariate: false, ..TpeSampler::default() };
        run(&sampler, &space, 30, Direction::Maximize, |p| p["fstep"] - p["istep"] + p["ilog"]);
        let mut rng = trial_rng(7, 1);
        for _ in 0..2000 {
            for (_, d) in &space {
                assert!(d.contains(sample_random(d, &mut rng)));
            }
        }
    }

    #[test]
    fn same_inputs_give_the_same_draw() {
        let space = all_kinds();
        let sampler = TpeSampler { seed: 42, ..TpeSampler::default() };
        let trials = run(&sampler, &space, 25, Direction::Minimize, |p| p["f"].abs() + p["i"]);
        let a = sampler.sample(&space, &trials, Direction::Minimize, 25);
        assert_eq!(a, sampler.sample(&space, &trials, Direction::Minimize, 25));
        assert_ne!(a, sampler.sample(&space, &trials, Direction::Minimize, 26));
        let other = TpeSampler { seed: 43, ..TpeSampler::default() };
        assert_ne!(a, other.sample(&space, &trials, Direction::Minimize, 25));
        // Startup draws are a function of (seed, number) only.
        assert_eq!(sampler.sample(&space, &[], Direction::Minimize, 3), sampler.sample(&space, &trials[..5], Direction::Minimize, 3));
    }

    fn best_of(trials: &[FrozenTrial]) -> f64 {
        trials.iter().filter_map(|t| t.value).fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn tpe_beats_random_on_a_quadratic() {
        let space: Space = vec![("x".into(), Distribution::Float { low: -10.0, high: 10.0, log: false, step: None })];
        let f = |p: &BTreeMap<String, f64>| (p["x"] - 3.3).powi(2);
        let random = TpeSampler { n_startup_trials: usize::MAX, ..TpeSampler::default() };
        let (mut tpe_total, mut random_total, mut tpe_near) = (0.0, 0.0, 0);
        for seed in 0..20 {
            let t = run(&TpeSampler { seed, ..TpeSampler::default() }, &space, 40, Direction::Minimize, f);
            tpe_total += best_of(&t);
            random_total += best_of(&run(&TpeSampler { seed, ..random.clone() }, &space, 40, Direction::Minimize, f));
            // After the startup trials, TPE's proposals cluster around the optimum.
            tpe_near += t[20..].iter().filter(|t| (t.params["x"].0 - 3.3).abs() < 1.0).count();
        }
        assert!(tpe_total < 0.5 * random_total, "TPE {tpe_total} vs random {random_total}");
        // Uniform proposals would land there 10% of the time (40 of 400); Optuna 5.0 gets 143 on this setup.
        assert!(tpe_near > 100, "only {tpe_near} of 400 late proposals within 1 of the optimum");
    }

    #[test]
    fn maximize_concentrates_near_the_maximum() {
        let space: Space = vec![("x".into(), Distribution::Float { low: 0.0, high: 1.0, log: false, step: None })];
        let mut late = 0.0;
        for seed in 0..10 {
            let t = run(&TpeSampler { seed, ..TpeSampler::default() }, &space, 40, Direction::Maximize, |p| -(p["x"] - 0.8).powi(2));
            late += t[30..].iter().map(|t| (t.params["x"].0 - 0.8).abs()).sum::<f64>() / 10.0;
        }
        assert!(late / 10.0 < 0.15, "mean distance of late proposals to the maximum: {}", late / 10.0);
    }

    #[test]
    fn categorical_choice_is_learned() {
        let d = Distribution::Categorical { choices: vec![json!("a"), json!("b"), json!("c"), json!("d")] };
        let space: Space = vec![("c".into(), d), ("x".into(), Distribution::Float { low: 0.0, high: 1.0, log: false, step: None })];
        let mut hits = 0;
        for seed in 0..10 {
            let t = run(&TpeSampler { seed, ..TpeSampler::default() }, &space, 40, Direction::Minimize, |p| if p["c"] == 2.0 { p["x"] } else { 1.0 + p["x"] });
            hits += t[20..].iter().filter(|t| t.params["c"].0 == 2.0).count();
        }
        assert!(hits > 10 * 20 / 2, "the best choice came up {hits} times in 200 late proposals");
    }

    #[test]
    fn odd_trials_are_tolerated() {
        let x = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
        let y = Distribution::Int { low: 1, high: 100, log: true, step: 1 };
        let wider = Distribution::Float { low: -1.0, high: 2.0, log: false, step: None };
        let mut trials = Vec::new();
        for i in 0..30u64 {
            let v = i as f64 / 30.0;
            let (state, value) = match i % 6 {
                0 => (State::Complete, Some(f64::NAN)),
                1 => (State::Complete, None),
                2 => (State::Pruned, Some(v)),
                3 => (State::Running, None),
                4 => (State::Fail, None),
                _ => (State::Complete, Some(v)),
            };
            let mut t = if i % 5 == 0 { trial(i, state, value, &[("x", v, &x)]) } else { trial(i, state, value, &[("x", v, &x), ("y", 1.0 + i as f64, &y)]) };
            if state == State::Pruned {
                t.intermediate.insert(i % 4, if i % 8 == 2 { f64::NAN } else { v });
            }
            trials.push(t);
        }
        // One trial saw `x` with other bounds: `x` leaves the joint space, yet its value still counts.
        trials.push(trial(30, State::Complete, Some(0.5), &[("x", 1.5, &wider), ("y", 3.0, &y)]));
        let space: Space =
            vec![("x".into(), x.clone()), ("y".into(), y.clone()), ("z".into(), Distribution::Categorical { choices: vec![json!(1), json!(2)] })];
        for direction in [Direction::Minimize, Direction::Maximize] {
            for number in 31..60 {
                let p = TpeSampler::default().sample(&space, &trials, direction, number);
                assert_eq!(p.len(), 3);
                assert!(x.contains(p["x"]) && y.contains(p["y"]) && p["z"] < 2.0);
            }
        }
        // Only running/failed trials: still the startup phase.
        let few: Vec<FrozenTrial> = trials.iter().filter(|t| matches!(t.state, State::Running | State::Fail)).cloned().collect();
        let p = TpeSampler::default().sample(&space, &few, Direction::Minimize, 99);
        assert!(x.contains(p["x"]));
    }

    #[test]
    fn broken_distributions_do_not_panic() {
        let x = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
        let space: Space = vec![
            ("x".into(), x.clone()),
            ("inverted".into(), Distribution::Float { low: 2.0, high: 1.0, log: false, step: None }),
            ("nan".into(), Distribution::Float { low: f64::NAN, high: 1.0, log: true, step: Some(0.0) }),
            ("huge".into(), Distribution::Float { low: -f64::MAX, high: f64::MAX, log: false, step: None }),
            ("none".into(), Distribution::Categorical { choices: vec![] }),
        ];
        let trials = run(&TpeSampler::default(), &space[..1].to_vec(), 15, Direction::Minimize, |p| p["x"]);
        let p = TpeSampler::default().sample(&space, &trials, Direction::Minimize, 15);
        assert_eq!(p.len(), space.len());
        assert!(x.contains(p["x"]));
    }

    #[test]
    fn split_ranks_complete_then_pruned_and_lies_about_running() {
        let d = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
        let mut ts = [
            trial(0, State::Complete, Some(3.0), &[("x", 0.1, &d)]),
            trial(1, State::Pruned, Some(0.0), &[("x", 0.2, &d)]),
            trial(2, State::Running, None, &[("x", 0.3, &d)]),
            trial(3, State::Complete, Some(1.0), &[("x", 0.4, &d)]),
            trial(4, State::Pruned, Some(5.0), &[("x", 0.5, &d)]),
            trial(5, State::Complete, Some(f64::NAN), &[("x", 0.6, &d)]),
        ];
        ts[1].intermediate.insert(1, 0.0);
        ts[4].intermediate.insert(3, 5.0);
        let refs: Vec<&FrozenTrial> = ts.iter().collect();
        let numbers = |v: Vec<&FrozenTrial>| v.iter().map(|t| t.number).collect::<Vec<_>>();
        let (b, a) = split_trials(&refs, 4, Direction::Minimize);
        // Complete 3, 0, then NaN-valued 5; the deeper pruned trial 4 before 1; running 2 above.
        assert_eq!((numbers(b), numbers(a)), (vec![0, 3, 4, 5], vec![1, 2]));
        let (b, _) = split_trials(&refs, 1, Direction::Maximize);
        assert_eq!(numbers(b), vec![0]);
    }
}
