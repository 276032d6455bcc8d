//! CMA-ES as Optuna's `CmaEsSampler` runs it: the float and int parameters every complete trial shares are
//! searched in `[0, 1]^n` (log scale for `log = true`, a half step widened for stepped ones), starting at the
//! centre with σ₀ = 1/6 and the `cmaes` package's defaults for λ, μ, the (active) weights and the learning
//! rates; a sample outside the box is drawn again (up to 10·n times), then clipped. Categorical parameters
//! and parameters outside the shared space are sampled at random, as Optuna's independent sampler does.
//! `restart_strategy = "ipop" | "bipop"` restarts a converged search from a random point with a larger
//! population (×2), as Optuna's restart sampler (before 4.4, then OptunaHub's) does.
//!
//! Optuna keeps the optimizer as a Python pickle in trial system attributes (`cma:optimizer:N`), which only
//! Python can read. bz needs no stored state: the search is a deterministic function of the seed and of the
//! complete trials, so every ask replays it (first the startup trials, then generations of λ complete trials
//! in trial order), which costs microseconds for hundreds of trials and works the same on every storage. With
//! one worker this is exactly the generation bookkeeping Optuna does; with several, a trial sampled from an
//! older generation is told to the current one instead of being left out.

use crate::space::{Direction, Distribution, FrozenTrial, Space, State};
use crate::tpe::sample_random;
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::collections::BTreeMap;
use std::sync::Mutex;

const EPS: f64 = 1e-8;
const SIGMA_MAX: f64 = 1e32;

/// How a converged search starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// Each restart doubles the population.
    Ipop,
    /// Alternates large populations (doubling) with small ones, keeping the evaluations of both regimes even.
    Bipop,
}

/// The (μ/μ_w, λ)-CMA-ES of Hansen's tutorial, with the defaults and update order of the `cmaes` package's `CMA`.
#[derive(Debug, Clone)]
pub struct Cma {
    n: usize,
    popsize: usize,
    mu: usize,
    mu_eff: f64,
    cc: f64,
    c1: f64,
    cmu: f64,
    c_sigma: f64,
    d_sigma: f64,
    chi_n: f64,
    weights: Vec<f64>,
    p_sigma: DVector<f64>,
    pc: DVector<f64>,
    mean: DVector<f64>,
    c: DMatrix<f64>,
    sigma: f64,
    /// B and D of C = B·D²·Bᵀ, until C changes.
    eigen: Option<(DMatrix<f64>, DVector<f64>)>,
    bounds: Vec<(f64, f64)>,
    n_max_resampling: usize,
    generation: usize,
    tolx: f64,
    funhist: Vec<f64>,
}

/// The population size the `cmaes` package picks for `n` dimensions: 4 + ⌊3 ln n⌋.
pub fn default_popsize(n: usize) -> usize {
    4 + (3.0 * (n.max(1) as f64).ln()).floor() as usize
}

impl Cma {
    /// A search around `mean` with step size `sigma` inside `bounds` (one `(low, high)` per dimension).
    pub fn new(mean: Vec<f64>, sigma: f64, bounds: Vec<(f64, f64)>, popsize: Option<usize>) -> Cma {
        let n = mean.len().max(1);
        let popsize = popsize.unwrap_or_else(|| default_popsize(n)).max(2);
        let mu = popsize / 2;
        let prime: Vec<f64> = (0..popsize).map(|i| ((popsize as f64 + 1.0) / 2.0).ln() - ((i + 1) as f64).ln()).collect();
        let eff = |w: &[f64]| w.iter().sum::<f64>().powi(2) / w.iter().map(|x| x * x).sum::<f64>();
        let mu_eff = eff(&prime[..mu]);
        let mu_eff_minus = eff(&prime[mu..]);
        let nf = n as f64;
        let c1 = 2.0 / ((nf + 1.3).powi(2) + mu_eff);
        let cmu = (1.0 - c1 - 1e-8).min(2.0 * (mu_eff - 2.0 + 1.0 / mu_eff) / ((nf + 2.0).powi(2) + mu_eff));
        let min_alpha = (1.0 + c1 / cmu).min(1.0 + 2.0 * mu_eff_minus / (mu_eff + 2.0)).min((1.0 - c1 - cmu) / (nf * cmu));
        let positive: f64 = prime.iter().filter(|w| **w > 0.0).sum();
        let negative: f64 = prime.iter().filter(|w| **w < 0.0).map(|w| -w).sum();
        let weights = prime.iter().map(|w| if *w >= 0.0 { w / positive } else { min_alpha / negative * w }).collect();
        let c_sigma = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
        let d_sigma = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + c_sigma;
        let cc = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);
        let funhist_term = 10 + (30.0 * nf / popsize as f64).ceil() as usize;
        Cma {
            n,
            popsize,
            mu,
            mu_eff,
            cc,
            c1,
            cmu,
            c_sigma,
            d_sigma,
            chi_n: nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf)),
            weights,
            p_sigma: DVector::zeros(n),
            pc: DVector::zeros(n),
            mean: DVector::from_vec(mean),
            c: DMatrix::identity(n, n),
            sigma: sigma.max(1e-10),
            eigen: None,
            bounds,
            n_max_resampling: 10 * n,
            generation: 0,
            tolx: 1e-12 * sigma,
            funhist: vec![f64::NAN; 2 * funhist_term],
        }
    }

    pub fn popsize(&self) -> usize {
        self.popsize
    }

    pub fn generation(&self) -> usize {
        self.generation
    }

    pub fn mean(&self) -> &[f64] {
        self.mean.as_slice()
    }

    fn eigen(&mut self) -> (DMatrix<f64>, DVector<f64>) {
        if let Some(e) = &self.eigen {
            return e.clone();
        }
        let sym = (&self.c + self.c.transpose()) / 2.0;
        let SymmetricEigen { eigenvectors: b, eigenvalues } = SymmetricEigen::new(sym);
        let d = eigenvalues.map(|x| if x < 0.0 { EPS } else { x }.sqrt());
        self.c = &b * DMatrix::from_diagonal(&d.map(|x| x * x)) * b.transpose();
        self.eigen = Some((b.clone(), d.clone()));
        (b, d)
    }

    /// One candidate: x ~ N(m, σ²C), drawn again while outside the bounds, then clipped.
    pub fn ask(&mut self, rng: &mut impl Rng) -> Vec<f64> {
        let (b, d) = self.eigen();
        let bd = b * DMatrix::from_diagonal(&d);
        let mut draw = || {
            let z = DVector::from_fn(self.n, |_, _| rng.sample::<f64, _>(StandardNormal));
            &self.mean + self.sigma * (&bd * z)
        };
        let inside = |x: &DVector<f64>| x.iter().zip(&self.bounds).all(|(v, (lo, hi))| v >= lo && v <= hi);
        for _ in 0..self.n_max_resampling {
            let x = draw();
            if inside(&x) {
                return x.as_slice().to_vec();
            }
        }
        draw().iter().zip(&self.bounds).map(|(v, (lo, hi))| v.clamp(*lo, *hi)).collect()
    }

    /// Updates the distribution from one generation: `popsize` candidates and their values (lower is better).
    pub fn tell(&mut self, solutions: &mut [(Vec<f64>, f64)]) {
        self.generation += 1;
        solutions.sort_by(|a, b| a.1.total_cmp(&b.1));
        let slot = 2 * (self.generation % (self.funhist.len() / 2));
        self.funhist[slot] = solutions[0].1;
        self.funhist[slot + 1] = solutions[solutions.len() - 1].1;
        let (b, d) = self.eigen();
        self.eigen = None;
        let ys: Vec<DVector<f64>> = solutions.iter().map(|(x, _)| (DVector::from_column_slice(x) - &self.mean) / self.sigma).collect();
        let y_w: DVector<f64> = ys.iter().zip(&self.weights).take(self.mu).fold(DVector::zeros(self.n), |acc, (y, w)| acc + y * *w);
        self.mean += self.sigma * &y_w;
        let c_inv_sqrt = &b * DMatrix::from_diagonal(&d.map(|x| 1.0 / x)) * b.transpose();
        self.p_sigma = (1.0 - self.c_sigma) * &self.p_sigma + (self.c_sigma * (2.0 - self.c_sigma) * self.mu_eff).sqrt() * (&c_inv_sqrt * &y_w);
        let norm = self.p_sigma.norm();
        self.sigma = (self.sigma * ((self.c_sigma / self.d_sigma) * (norm / self.chi_n - 1.0)).exp()).min(SIGMA_MAX);
        let left = norm / (1.0 - (1.0 - self.c_sigma).powi(2 * (self.generation as i32 + 1))).sqrt();
        let h_sigma = if left < (1.4 + 2.0 / (self.n as f64 + 1.0)) * self.chi_n { 1.0 } else { 0.0 };
        self.pc = (1.0 - self.cc) * &self.pc + h_sigma * (self.cc * (2.0 - self.cc) * self.mu_eff).sqrt() * &y_w;
        let mut rank_mu = DMatrix::zeros(self.n, self.n);
        for (y, w) in ys.iter().zip(&self.weights) {
            // Negative weights are scaled so that bad candidates far out cannot shrink C by too much.
            let w_io = if *w >= 0.0 { *w } else { w * self.n as f64 / ((&c_inv_sqrt * y).norm_squared() + EPS) };
            rank_mu += w_io * (y * y.transpose());
        }
        let delta_h = (1.0 - h_sigma) * self.cc * (2.0 - self.cc);
        let sum_w: f64 = self.weights.iter().sum();
        self.c = (1.0 + self.c1 * delta_h - self.c1 - self.cmu * sum_w) * &self.c + self.c1 * (&self.pc * self.pc.transpose()) + self.cmu * rank_mu;
    }

    /// The `cmaes` package's termination tests: flat values, a collapsed or exploding step, no effect of a
    /// step on the mean, or an ill-conditioned C.
    pub fn should_stop(&mut self) -> bool {
        let (b, d) = self.eigen();
        let dc = self.c.diagonal();
        let term = self.funhist.len() / 2;
        let (lo, hi) = self.funhist.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        if self.generation > term && hi - lo < 1e-12 {
            return true;
        }
        if dc.iter().all(|c| self.sigma * c < self.tolx) && self.pc.iter().all(|p| self.sigma * p < self.tolx) {
            return true;
        }
        if self.sigma * d.max() > 1e4 {
            return true;
        }
        if self.mean.iter().zip(dc.iter()).any(|(m, c)| *m == m + 0.2 * self.sigma * c.sqrt()) {
            return true;
        }
        let i = self.generation % self.n;
        if self.mean.iter().zip(b.column(i).iter()).all(|(m, bi)| *m == m + 0.1 * self.sigma * d[i] * bi) {
            return true;
        }
        d.max() / d.min() > 1e14
    }
}

/// One searched dimension: a float or int parameter mapped onto [0, 1].
#[derive(Debug, Clone)]
struct Dim<'a> {
    name: &'a str,
    d: &'a Distribution,
    lo: f64,
    hi: f64,
}

impl<'a> Dim<'a> {
    /// `None` for categorical, single-valued or unusable distributions, which CMA-ES leaves to random sampling.
    fn new(name: &'a str, d: &'a Distribution) -> Option<Dim<'a>> {
        let (lo, hi) = match *d {
            Distribution::Float { low, high, log: true, .. } => (low.ln(), high.ln()),
            Distribution::Float { low, high, step: Some(s), .. } => (low - s / 2.0, high + s / 2.0),
            Distribution::Float { low, high, .. } => (low, high),
            Distribution::Int { low, high, log: true, .. } => ((low as f64 - 0.5).ln(), (high as f64 + 0.5).ln()),
            Distribution::Int { low, high, step, .. } => (low as f64 - step as f64 / 2.0, high as f64 + step as f64 / 2.0),
            Distribution::Categorical { .. } => return None,
        };
        (!d.is_single() && lo.is_finite() && hi.is_finite() && hi > lo && (hi - lo).is_finite()).then_some(Dim { name, d, lo, hi })
    }

    fn transform(&self, v: f64) -> f64 {
        let v = match self.d {
            Distribution::Float { log: true, .. } | Distribution::Int { log: true, .. } => v.ln(),
            _ => v,
        };
        (v - self.lo) / (self.hi - self.lo)
    }

    /// Optuna's `_untransform_numerical_param`: back to the distribution, on its grid, inside its bounds.
    fn untransform(&self, x: f64) -> f64 {
        let v = self.lo + x * (self.hi - self.lo);
        match *self.d {
            Distribution::Float { low, high, log: true, .. } => v.exp().clamp(low, high.next_down().max(low)),
            Distribution::Float { low, high, step: Some(s), .. } => (((v - low) / s).round() * s + low).clamp(low, high),
            Distribution::Float { low, high, .. } => v.clamp(low, high.next_down().max(low)),
            Distribution::Int { low, high, log: true, .. } => v.exp().round().clamp(low as f64, high as f64),
            Distribution::Int { low, high, step, .. } => {
                (((v - low as f64) / step as f64 + 0.5).floor() * step as f64 + low as f64).clamp(low as f64, high as f64)
            }
            Distribution::Categorical { .. } => x,
        }
    }
}

/// `sampler = "cmaes"`.
#[derive(Debug, Clone, PartialEq)]
pub struct CmaEsSampler {
    pub seed: u64,
    /// Complete trials sampled at random first (Optuna's default: 1).
    pub n_startup_trials: usize,
    pub restart: Option<Restart>,
    /// λ; default 4 + ⌊3 ln n⌋.
    pub popsize: Option<usize>,
    /// The population's growth factor at each (large) restart.
    pub inc_popsize: usize,
    /// The last replay, continued when the next ask's history only grew.
    pub memo: Memo,
}

impl Default for CmaEsSampler {
    fn default() -> Self {
        CmaEsSampler { seed: 0, n_startup_trials: 1, restart: None, popsize: None, inc_popsize: 2, memo: Memo::default() }
    }
}

/// Where a replayed search stands: the optimizer, the restart bookkeeping of Optuna's restart sampler, and
/// which trials it has been told (by number and value, in order), so a later ask can go on from here.
#[derive(Debug, Clone)]
struct Run {
    cma: Cma,
    restart_rng: ChaCha8Rng,
    restarts: u32,
    large_restarts: u32,
    small: bool,
    small_evals: usize,
    large_evals: usize,
    dims: Vec<String>,
    told: Vec<(u64, u64)>,
}

/// A cache of the last replay. Replaying from scratch costs O(generations · n³) per ask, which grows with the
/// study; continuing a replay whose told trials are a prefix of the new history makes an ask cost one
/// generation at most. It never changes a sample: the replay is the same either way.
#[derive(Debug, Default)]
pub struct Memo(Mutex<Option<Box<Run>>>);

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl PartialEq for Memo {
    /// A cache is not part of a sampler's settings.
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl CmaEsSampler {
    /// Internal values for every parameter of `space` for trial `number`, given all trials of the study (the
    /// trial being sampled is not among them). Deterministic for (seed, number, trials).
    pub fn sample(&self, space: &Space, trials: &[FrozenTrial], direction: Direction, number: u64) -> BTreeMap<String, f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(number);
        let mut complete: Vec<&FrozenTrial> =
            trials.iter().filter(|t| t.state == State::Complete && t.number != number && t.value.is_some_and(|v| !v.is_nan())).collect();
        complete.sort_by_key(|t| t.number);
        let dims: Vec<Dim> = space
            .iter()
            .filter(|(name, d)| !complete.is_empty() && complete.iter().all(|t| t.params.get(name).is_some_and(|(_, td)| td == d)))
            .filter_map(|(name, d)| Dim::new(name, d))
            .collect();
        let mut out = BTreeMap::new();
        if !dims.is_empty() && complete.len() >= self.n_startup_trials {
            let mut run = self.replay(&dims, &complete[self.n_startup_trials..], direction);
            for (dim, x) in dims.iter().zip(run.cma.ask(&mut rng)) {
                out.insert(dim.name.to_string(), dim.untransform(x));
            }
        }
        for (name, d) in space {
            if !out.contains_key(name) {
                out.insert(name.clone(), sample_random(d, &mut rng));
            }
        }
        out
    }

    /// The search after telling it `solutions` (complete trials sampled by it, in trial order) generation by
    /// generation, continuing the memoised replay when it was told a prefix of them.
    fn replay(&self, dims: &[Dim], solutions: &[&FrozenTrial], direction: Direction) -> Run {
        let names: Vec<String> = dims.iter().map(|d| d.name.to_string()).collect();
        let key = |t: &&FrozenTrial| (t.number, t.value.unwrap_or(f64::INFINITY).to_bits());
        let cached = self.memo.0.lock().ok().and_then(|mut m| m.take());
        let mut run = match cached {
            Some(run) if run.dims == names && run.told.len() <= solutions.len() && run.told.iter().copied().eq(solutions[..run.told.len()].iter().map(key)) => {
                *run
            }
            _ => self.fresh_run(names),
        };
        let n = dims.len();
        let initial = self.popsize.unwrap_or_else(|| default_popsize(n));
        let sign = if direction == Direction::Maximize { -1.0 } else { 1.0 };
        while run.told.len() + run.cma.popsize() <= solutions.len() {
            let popsize = run.cma.popsize();
            let batch = &solutions[run.told.len()..run.told.len() + popsize];
            let mut generation: Vec<(Vec<f64>, f64)> =
                batch.iter().map(|t| (dims.iter().map(|d| d.transform(t.params[d.name].0)).collect(), sign * t.value.unwrap_or(f64::INFINITY))).collect();
            run.told.extend(batch.iter().map(key));
            run.cma.tell(&mut generation);
            let Some(strategy) = self.restart else { continue };
            if run.cma.should_stop() {
                self.restart(&mut run, strategy, popsize, initial);
            }
        }
        if let Ok(mut m) = self.memo.0.lock() {
            *m = Some(Box::new(run.clone()));
        }
        run
    }

    /// The search before any generation: the centre of the box, σ₀ = 1/6, the default population.
    fn fresh_run(&self, dims: Vec<String>) -> Run {
        let n = dims.len();
        let popsize = self.popsize.unwrap_or_else(|| default_popsize(n));
        // Restart points come from their own stream, drawn in the same order at every replay.
        let mut restart_rng = ChaCha8Rng::seed_from_u64(self.seed);
        restart_rng.set_stream(u64::MAX);
        let cma = Cma::new(vec![0.5; n], 1.0 / 6.0, vec![(0.0, 1.0); n], Some(popsize));
        Run { cma, restart_rng, restarts: 0, large_restarts: 0, small: true, small_evals: 0, large_evals: 0, dims, told: Vec::new() }
    }

    /// A converged search starts again from a random point with the population `strategy` gives.
    fn restart(&self, run: &mut Run, strategy: Restart, popsize: usize, initial: usize) {
        run.restarts += 1;
        let popsize = match strategy {
            Restart::Ipop => popsize * self.inc_popsize,
            Restart::Bipop => {
                let evals = popsize * run.cma.generation();
                if run.small {
                    run.small_evals += evals;
                } else {
                    run.large_evals += evals;
                }
                run.small = run.small_evals < run.large_evals;
                if run.small {
                    let multiplier = (self.inc_popsize as f64).powi(run.large_restarts as i32);
                    (initial as f64 * multiplier.powf(run.restart_rng.random::<f64>().powi(2))).floor() as usize
                } else {
                    run.large_restarts += 1;
                    initial * self.inc_popsize.pow(run.large_restarts)
                }
            }
        };
        let n = run.dims.len();
        let mean = (0..n).map(|_| run.restart_rng.random::<f64>()).collect();
        run.cma = Cma::new(mean, 1.0 / 6.0, vec![(0.0, 1.0); n], Some(popsize));
    }
}

/// The parameters CMA-ES cannot search (categorical ones), which it samples at random.
pub fn categorical_params(space: &Space) -> Vec<&str> {
    space.iter().filter(|(_, d)| matches!(d, Distribution::Categorical { .. })).map(|(n, _)| n.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_matches_the_cmaes_package() {
        // cmaes 0.13.1: CMA(mean=[0.5]*3, sigma=1/6, bounds=[[0, 1]]*3) told these two generations.
        let mut cma = Cma::new(vec![0.5; 3], 1.0 / 6.0, vec![(0.0, 1.0); 3], None);
        assert_eq!(cma.popsize(), 7);
        let f = |x: &[f64]| (x[0] - 0.2).powi(2) + 4.0 * (x[1] - 0.7).powi(2) + 9.0 * (x[2] - 0.4).powi(2);
        for g in 0..2 {
            let mut sols: Vec<(Vec<f64>, f64)> = (0..7)
                .map(|i| {
                    let (i, g) = (i as f64, g as f64);
                    let x = vec![(0.13 * (i + 1.0) + 0.29 * g) % 1.0, (0.37 * (i + 2.0) + 0.11 * g) % 1.0, (0.71 * (i + 3.0) + 0.05 * g) % 1.0];
                    let v = f(&x);
                    (x, v)
                })
                .collect();
            cma.tell(&mut sols);
        }
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let mean = [0.5435314765380569, 0.7872346935796194, 0.31878467659764614];
        assert!(cma.mean().iter().zip(mean).all(|(a, b)| close(*a, b)), "{:?}", cma.mean());
        assert!(close(cma.sigma, 0.1851962781753172), "{}", cma.sigma);
        let c = [
            [0.9363742296374368, -0.013760774359055448, 0.06483310770401651],
            [-0.013760774359055448, 1.2717665906026665, -0.2613508525488924],
            [0.06483310770401654, -0.26135085254889245, 0.986583270115439],
        ];
        for (i, row) in c.iter().enumerate() {
            for (j, want) in row.iter().enumerate() {
                assert!(close(cma.c[(i, j)], *want), "C[{i}][{j}] = {} vs {want}", cma.c[(i, j)]);
            }
        }
        assert!(!cma.should_stop());
    }

    /// Runs `cma` on `f` until the best value is below `target`; the number of generations it took.
    fn minimise(mut cma: Cma, f: impl Fn(&[f64]) -> f64, target: f64, max_gen: usize, seed: u64) -> Option<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for g in 0..max_gen {
            let mut sols: Vec<(Vec<f64>, f64)> = (0..cma.popsize()).map(|_| cma.ask(&mut rng)).map(|x| (x.clone(), f(&x))).collect();
            if sols.iter().any(|(_, v)| *v < target) {
                return Some(g);
            }
            cma.tell(&mut sols);
        }
        None
    }

    #[test]
    fn converges_on_sphere_and_rosenbrock() {
        let sphere = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>();
        let rosenbrock = |x: &[f64]| x.windows(2).map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2)).sum::<f64>();
        for seed in 0..3 {
            let g = minimise(Cma::new(vec![3.0; 8], 2.0, vec![(-5.0, 5.0); 8], None), sphere, 1e-10, 1000, seed);
            assert!(g.is_some_and(|g| g < 400), "sphere-8: {g:?} generations");
            let g = minimise(Cma::new(vec![0.0; 6], 0.5, vec![(-5.0, 5.0); 6], None), rosenbrock, 1e-8, 3000, seed);
            assert!(g.is_some_and(|g| g < 2000), "rosenbrock-6: {g:?} generations");
        }
    }

    #[test]
    fn samples_stay_inside_the_bounds() {
        let mut cma = Cma::new(vec![0.99; 4], 3.0, vec![(0.0, 1.0); 4], None);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            assert!(cma.ask(&mut rng).iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    fn space() -> Space {
        vec![
            ("x".into(), Distribution::Float { low: -5.0, high: 5.0, log: false, step: None }),
            ("lr".into(), Distribution::Float { low: 1e-5, high: 1.0, log: true, step: None }),
            ("units".into(), Distribution::Int { low: 4, high: 200, log: true, step: 1 }),
            ("layers".into(), Distribution::Int { low: 1, high: 9, log: false, step: 2 }),
            ("drop".into(), Distribution::Float { low: 0.0, high: 0.5, log: false, step: Some(0.05) }),
            ("act".into(), Distribution::Categorical { choices: vec![serde_json::json!("relu"), serde_json::json!("tanh")] }),
        ]
    }

    fn objective(p: &BTreeMap<String, f64>) -> f64 {
        (p["x"] - 1.5).powi(2)
            + (p["lr"].log10() + 2.0).powi(2)
            + (p["units"].ln() - 64f64.ln()).powi(2)
            + (p["layers"] - 5.0).powi(2) / 4.0
            + (p["drop"] - 0.2).powi(2) * 10.0
            + p["act"]
    }

    fn study(sampler: &CmaEsSampler, space: &Space, n: u64, f: impl Fn(&BTreeMap<String, f64>) -> f64) -> Vec<FrozenTrial> {
        let mut trials = Vec::new();
        for number in 0..n {
            let p = sampler.sample(space, &trials, Direction::Minimize, number);
            for (name, d) in space {
                assert!(d.contains(p[name]), "{name} = {} outside {d:?}", p[name]);
            }
            let params = space.iter().map(|(n, d)| (n.clone(), (p[n], d.clone()))).collect();
            trials.push(FrozenTrial {
                number,
                state: State::Complete,
                value: Some(f(&p)),
                params,
                intermediate: BTreeMap::new(),
                values: Some(f(&p)).into_iter().collect(),
                constraints: Vec::new(),
            });
        }
        trials
    }

    #[test]
    fn the_sampler_beats_random_and_is_reproducible() {
        let space = space();
        let best = |t: &[FrozenTrial]| t.iter().filter_map(|t| t.value).fold(f64::INFINITY, f64::min);
        let (mut cma_total, mut random_total) = (0.0, 0.0);
        for seed in 0..5 {
            let sampler = CmaEsSampler { seed, ..CmaEsSampler::default() };
            let trials = study(&sampler, &space, 150, objective);
            cma_total += best(&trials);
            let random = CmaEsSampler { seed, n_startup_trials: usize::MAX, ..CmaEsSampler::default() };
            random_total += best(&study(&random, &space, 150, objective));
            if seed == 0 {
                let again = study(&sampler, &space, 150, objective);
                assert_eq!(trials, again, "same seed, same study");
                let a = sampler.sample(&space, &trials, Direction::Minimize, 150);
                assert_ne!(a, CmaEsSampler { seed: 1, ..sampler.clone() }.sample(&space, &trials, Direction::Minimize, 150));
                assert_ne!(a, sampler.sample(&space, &trials, Direction::Minimize, 151));
            }
        }
        assert!(cma_total < 0.5 * random_total, "CMA-ES {cma_total} vs random {random_total}");
    }

    #[test]
    fn a_memoised_replay_samples_what_a_fresh_one_does() {
        let space: Space = space()[..2].to_vec();
        let plateau = |p: &BTreeMap<String, f64>| ((p["x"] - 1.0).powi(2) + (p["lr"].ln() + 3.0).powi(2)).max(0.5);
        let sampler = CmaEsSampler { seed: 3, restart: Some(Restart::Bipop), ..CmaEsSampler::default() };
        let trials = study(&sampler, &space, 300, plateau);
        // `clone` starts with an empty memo, so each of these asks replays the whole history.
        for number in [1, 2, 7, 8, 150, 299, 300] {
            let fresh = sampler.clone().sample(&space, &trials[..number as usize], Direction::Minimize, number);
            assert_eq!(fresh, sampler.sample(&space, &trials[..number as usize], Direction::Minimize, number), "trial {number}");
        }
        // A history the memo was not told (another study's) is replayed from scratch.
        let other = study(&CmaEsSampler { seed: 4, ..CmaEsSampler::default() }, &space, 60, plateau);
        assert_eq!(sampler.clone().sample(&space, &other, Direction::Minimize, 60), sampler.sample(&space, &other, Direction::Minimize, 60));
    }

    #[test]
    fn grid_values_come_back_on_their_grid() {
        let space = space();
        for (name, d) in &space[..5] {
            let dim = Dim::new(name, d).unwrap();
            for i in 0..=100 {
                let v = dim.untransform(i as f64 / 100.0);
                assert!(d.contains(v), "{name}: {v}");
                // A value of the distribution maps back to itself.
                assert!((dim.untransform(dim.transform(v)) - v).abs() <= 1e-9 * v.abs().max(1.0), "{name}: {v}");
            }
        }
        assert!(Dim::new("act", &space[5].1).is_none());
        assert!(Dim::new("one", &Distribution::Int { low: 3, high: 3, log: false, step: 1 }).is_none());
    }

    #[test]
    fn restarts_grow_the_population_once_the_search_converges() {
        let space: Space = space()[..2].to_vec();
        // A bowl with a flat bottom: once the population is all on it, the values stop changing (tolfun).
        let plateau = |p: &BTreeMap<String, f64>| ((p["x"] - 1.0).powi(2) + (p["lr"].ln() + 3.0).powi(2)).max(0.5);
        for (strategy, seed) in [(Restart::Ipop, 0), (Restart::Bipop, 1)] {
            let sampler = CmaEsSampler { seed, restart: Some(strategy), ..CmaEsSampler::default() };
            let trials = study(&sampler, &space, 400, plateau);
            let refs: Vec<&FrozenTrial> = trials.iter().collect();
            let dims: Vec<Dim> = space.iter().filter_map(|(n, d)| Dim::new(n, d)).collect();
            let run = sampler.replay(&dims, &refs[1..], Direction::Minimize);
            assert!(run.restarts >= 1, "{strategy:?}: no restart in 400 trials");
            if strategy == Restart::Ipop {
                assert_eq!(run.cma.popsize(), default_popsize(2) << run.restarts);
            }
            // Without a strategy the converged search just goes on.
            let plain = CmaEsSampler { seed, ..CmaEsSampler::default() }.replay(&dims, &refs[1..], Direction::Minimize);
            assert_eq!((plain.restarts, plain.cma.popsize()), (0, default_popsize(2)));
        }
    }

    #[test]
    fn maximising_climbs_towards_the_maximum() {
        let space: Space = space()[..2].to_vec();
        let f = |p: &BTreeMap<String, f64>| -(p["x"] - 4.0).powi(2) - (p["lr"].log10() + 1.0).powi(2);
        let sampler = CmaEsSampler::default();
        let mut trials: Vec<FrozenTrial> = Vec::new();
        for number in 0..80 {
            let p = sampler.sample(&space, &trials, Direction::Maximize, number);
            let params = space.iter().map(|(n, d)| (n.clone(), (p[n], d.clone()))).collect();
            trials.push(FrozenTrial {
                number,
                state: State::Complete,
                value: Some(f(&p)),
                params,
                intermediate: BTreeMap::new(),
                values: Some(f(&p)).into_iter().collect(),
                constraints: Vec::new(),
            });
        }
        let best = trials.iter().filter_map(|t| t.value).fold(f64::NEG_INFINITY, f64::max);
        assert!(best > -1e-2, "best {best}");
    }

    #[test]
    fn parameters_outside_the_shared_space_are_drawn_at_random() {
        let space = space();
        let trials = study(&CmaEsSampler::default(), &space, 3, objective);
        // `extra` is missing from the earlier trials, `act` is categorical: both random, the rest from CMA-ES.
        let mut wider = space.clone();
        wider.push(("extra".into(), Distribution::Float { low: 0.0, high: 1.0, log: false, step: None }));
        let p = CmaEsSampler::default().sample(&wider, &trials, Direction::Minimize, 3);
        assert!(wider.iter().all(|(n, d)| d.contains(p[n])));
        assert_eq!(categorical_params(&wider), ["act"]);
        // A failed or running trial does not count: the first trial is still a startup one.
        let mut odd = trials.clone();
        odd.iter_mut().for_each(|t| t.state = State::Fail);
        let a = CmaEsSampler::default().sample(&space, &odd, Direction::Minimize, 3);
        assert!(space.iter().all(|(n, d)| d.contains(a[n])));
    }
}
