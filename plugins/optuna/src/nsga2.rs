//! NSGA-II as Optuna 5's `NSGAIISampler` runs it with its defaults: generations of `population_size` COMPLETE
//! trials; the parents of generation g are the elite of generation g−1 together with g−1's own parents
//! (non-domination rank, constrained: feasible first; the boundary rank cut by crowding distance); a child takes
//! each parameter from one of two tournament-picked parents (uniform crossover, `swapping_prob`) with probability
//! `crossover_prob`, else copies one parent; each parameter is then redrawn at random with probability
//! `mutation_prob` (default 1/number of parameters). Generation 0 is random.
//!
//! The bookkeeping is Optuna's, so Python Optuna can continue a bz study and the other way round: each trial's
//! generation in the trial system attribute `NSGAIISampler:generation`, each generation's parents (trial ids) in
//! the study system attribute `NSGAIISampler:parent:<g>`. The storage side lives in `tuner`.

use crate::pareto::{constrained_dominates, crowding_distance, dominates, losses, non_domination_ranks, penalty};
use crate::space::{Direction, FrozenTrial, Space};
use crate::tpe::sample_random;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

pub const GENERATION_KEY: &str = "NSGAIISampler:generation";
pub const PARENT_KEY_PREFIX: &str = "NSGAIISampler:parent:";

#[derive(Debug, Clone, PartialEq)]
pub struct Nsga2Sampler {
    pub seed: u64,
    pub population_size: usize,
    /// `None`: 1 / number of parameters.
    pub mutation_prob: Option<f64>,
    pub crossover_prob: f64,
    pub swapping_prob: f64,
}

impl Default for Nsga2Sampler {
    fn default() -> Self {
        Nsga2Sampler { seed: 0, population_size: 50, mutation_prob: None, crossover_prob: 0.9, swapping_prob: 0.5 }
    }
}

impl Nsga2Sampler {
    /// A new trial's generation (Optuna's `get_trial_generation`), from the generations of the COMPLETE trials
    /// (−1 for one without): the newest generation, or the next one once it has `population_size` trials.
    pub fn generation(&self, complete_generations: impl Iterator<Item = i64>) -> i64 {
        let (mut max, mut count) = (0i64, 0usize);
        for g in complete_generations {
            if g > max {
                (max, count) = (g, 1);
            } else if g == max {
                count += 1;
            }
        }
        if count < self.population_size {
            max
        } else {
            max + 1
        }
    }

    /// The elite of `population` (Optuna's `NSGAIIElitePopulationSelectionStrategy`): whole ranks while they fit,
    /// then the boundary rank's most isolated trials (largest crowding distance).
    pub fn select_elite<'a>(&self, population: &[&'a FrozenTrial], directions: &[Direction]) -> Vec<&'a FrozenTrial> {
        let constrained = population.iter().any(|t| !t.constraints.is_empty());
        let l: Vec<Vec<f64>> = population.iter().map(|t| losses(t, directions)).collect();
        let pen: Vec<f64> = population.iter().map(|t| penalty(t)).collect();
        let ranks = non_domination_ranks(&l, constrained.then_some(&pen[..]));
        let mut elite: Vec<&FrozenTrial> = Vec::new();
        for rank in 0..=ranks.iter().copied().max().unwrap_or(0) {
            let members: Vec<usize> = (0..population.len()).filter(|&i| ranks[i] == rank).collect();
            if elite.len() + members.len() < self.population_size {
                elite.extend(members.iter().map(|&i| population[i]));
                continue;
            }
            let n = self.population_size - elite.len();
            let dist = crowding_distance(&members.iter().map(|&i| l[i].clone()).collect::<Vec<_>>());
            let mut order: Vec<usize> = (0..members.len()).collect();
            // Optuna sorts ascending by distance then reverses: larger first, and among equals the later one first.
            order.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]).then(b.cmp(&a)));
            elite.extend(order.iter().take(n).map(|&k| population[members[k]]));
            break;
        }
        elite
    }

    /// Internal values for every parameter of `space` for trial `number`, children of `parents` (random when
    /// there are none: generation 0).
    pub fn sample(&self, space: &Space, parents: &[&FrozenTrial], directions: &[Direction], number: u64) -> BTreeMap<String, f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x006e_7367_6132);
        rng.set_stream(number);
        let shared: Vec<&str> = space
            .iter()
            .filter(|(n, d)| !d.is_single() && parents.iter().all(|p| p.params.get(n).is_some_and(|(_, pd)| pd == d)))
            .map(|(n, _)| n.as_str())
            .collect();
        let mut child: BTreeMap<String, f64> = BTreeMap::new();
        if !parents.is_empty() && !shared.is_empty() {
            if rng.random::<f64>() < self.crossover_prob && parents.len() >= 2 {
                let constrained = parents.iter().any(|t| !t.constraints.is_empty());
                let a = tournament(parents, &[], directions, constrained, &mut rng);
                let b = tournament(parents, &[a], directions, constrained, &mut rng);
                for name in &shared {
                    // Optuna's mask: `rand >= swapping_prob` takes the last parent.
                    let from = if rng.random::<f64>() >= self.swapping_prob { b } else { a };
                    child.insert(name.to_string(), from.params[*name].0);
                }
            } else {
                let p = parents[rng.random_range(0..parents.len())];
                for name in &shared {
                    child.insert(name.to_string(), p.params[*name].0);
                }
            }
            let mutation_prob = self.mutation_prob.unwrap_or(1.0 / (child.len().max(1) as f64));
            child.retain(|_, _| rng.random::<f64>() >= mutation_prob);
        }
        space.iter().map(|(n, d)| (n.clone(), child.get(n).copied().unwrap_or_else(|| sample_random(d, &mut rng)))).collect()
    }
}

/// NSGA-II's bookkeeping held in memory (what the storage's attributes hold in a real study): each trial's
/// generation and each generation's parents. For benchmarks and tests that run a study without a database.
#[derive(Debug, Default)]
pub struct MemoryBook {
    generations: BTreeMap<u64, i64>,
    parents: BTreeMap<i64, Vec<u64>>,
}

impl MemoryBook {
    /// Samples trial `number` given the study's `trials` (COMPLETE ones count), recording its generation.
    pub fn sample(&mut self, ga: &Nsga2Sampler, space: &Space, trials: &[FrozenTrial], directions: &[Direction], number: u64) -> BTreeMap<String, f64> {
        let complete: Vec<&FrozenTrial> = trials.iter().filter(|t| t.state == crate::space::State::Complete).collect();
        let generation = ga.generation(complete.iter().map(|t| self.generations.get(&t.number).copied().unwrap_or(-1)));
        self.generations.insert(number, generation);
        for g in 1..=generation {
            if self.parents.contains_key(&g) {
                continue;
            }
            let prev = self.parents.get(&(g - 1)).cloned().unwrap_or_default();
            let pool: Vec<&FrozenTrial> =
                complete.iter().copied().filter(|t| self.generations.get(&t.number) == Some(&(g - 1)) || prev.contains(&t.number)).collect();
            let elite = ga.select_elite(&pool, directions).iter().map(|t| t.number).collect();
            self.parents.insert(g, elite);
        }
        let ids = self.parents.get(&generation).cloned().unwrap_or_default();
        let parents: Vec<&FrozenTrial> = complete.iter().copied().filter(|t| generation > 0 && ids.contains(&t.number)).collect();
        ga.sample(space, &parents, directions, number)
    }
}

/// Binary tournament (Optuna's `_select_parent`): two random candidates from the population without `taken`; the
/// first wins only if it dominates the second.
fn tournament<'a>(parents: &[&'a FrozenTrial], taken: &[&FrozenTrial], directions: &[Direction], constrained: bool, rng: &mut ChaCha8Rng) -> &'a FrozenTrial {
    let pool: Vec<&FrozenTrial> = parents.iter().copied().filter(|p| !taken.iter().any(|t| t.number == p.number)).collect();
    let pool = if pool.is_empty() { parents.to_vec() } else { pool };
    let c0 = pool[rng.random_range(0..pool.len())];
    let c1 = pool[rng.random_range(0..pool.len())];
    let wins = if constrained { constrained_dominates(c0, c1, directions) } else { dominates(&losses(c0, directions), &losses(c1, directions)) };
    if wins {
        c0
    } else {
        c1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pareto::{hypervolume, pareto_front};
    use crate::space::{Distribution, State};

    fn zdt1(x: &[f64]) -> [f64; 2] {
        let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
        [x[0], g * (1.0 - (x[0] / g).sqrt())]
    }

    #[test]
    fn generations_fill_then_advance() {
        let s = Nsga2Sampler { population_size: 3, ..Default::default() };
        assert_eq!(s.generation([].into_iter()), 0);
        assert_eq!(s.generation([0, 0].into_iter()), 0);
        assert_eq!(s.generation([0, 0, 0].into_iter()), 1);
        assert_eq!(s.generation([0, 0, 0, 1].into_iter()), 1);
        assert_eq!(s.generation([-1, -1, -1].into_iter()), 0);
    }

    /// A study run through the sampler as the tuner does it (generations, cached parents) improves on random.
    #[test]
    fn nsga2_beats_random_on_zdt1() {
        let space: Space = (0..5).map(|i| (format!("x{i}"), Distribution::Float { low: 0.0, high: 1.0, log: false, step: None })).collect();
        let d = [Direction::Minimize, Direction::Minimize];
        let hv = |s: &Nsga2Sampler, random: bool| {
            let mut trials: Vec<FrozenTrial> = Vec::new();
            let mut book = MemoryBook::default();
            for number in 0..300u64 {
                let p = if random { s.sample(&space, &[], &d, number) } else { book.sample(s, &space, &trials, &d, number) };
                let x: Vec<f64> = (0..5).map(|i| p[&format!("x{i}")]).collect();
                let f = zdt1(&x);
                trials.push(FrozenTrial {
                    number,
                    state: State::Complete,
                    value: Some(f[0]),
                    params: space.iter().map(|(n, dd)| (n.clone(), (p[n], dd.clone()))).collect(),
                    intermediate: BTreeMap::new(),
                    values: f.to_vec(),
                    constraints: Vec::new(),
                });
            }
            let front: Vec<Vec<f64>> = pareto_front(&trials, &d).iter().map(|t| t.values.clone()).collect();
            hypervolume(&front, &[1.1, 11.0])
        };
        let mut wins = 0;
        for seed in 0..3 {
            let s = Nsga2Sampler { seed, population_size: 20, ..Default::default() };
            if hv(&s, false) > hv(&s, true) {
                wins += 1;
            }
        }
        assert!(wins >= 2, "NSGA-II beat random in only {wins} of 3 seeds");
    }
}
