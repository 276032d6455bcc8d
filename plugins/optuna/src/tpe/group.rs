//! The group-decomposed search space of Optuna's `TPESampler(multivariate=True, group=True)`: the parameters of
//! the finished trials split into the largest groups that always appear together, each group sampled jointly
//! by the multivariate TPE over the trials that contain it. A conditional space (`when`) needs it: parameters
//! that only some trials have would otherwise fall back to one mixture per parameter.

use super::{sample_random, Spec, TpeSampler};
use crate::space::{Distribution, FrozenTrial, Space, State};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Optuna's `_SearchSpaceGroup.add_distributions` over each trial's parameter names, in trial order: every
/// group is split into the part the trial has and the part it lacks, and its new names form one more group.
pub(super) fn decompose<'a>(trials: impl IntoIterator<Item = &'a FrozenTrial>) -> Vec<BTreeSet<&'a str>> {
    let mut groups: Vec<BTreeSet<&str>> = Vec::new();
    for t in trials {
        let mut names: BTreeSet<&str> = t.params.keys().map(String::as_str).collect();
        let mut next = Vec::with_capacity(groups.len() * 2 + 1);
        for g in &groups {
            next.push(g.intersection(&names).copied().collect());
            next.push(g.difference(&names).copied().collect());
            names.retain(|n| !g.contains(n));
        }
        next.push(names);
        groups = next.into_iter().filter(|g: &BTreeSet<&str>| !g.is_empty()).collect();
    }
    groups
}

/// Samples `space` group by group once the startup trials are done: each group of `considered`'s finished
/// trials jointly (names sorted, as Optuna does), then every parameter no group holds (never seen yet) with its
/// own mixture; single-valued or unusable distributions at random.
pub(super) fn sample(
    tpe: &TpeSampler,
    space: &Space,
    split: (&[&FrozenTrial], &[&FrozenTrial]),
    considered: &[&FrozenTrial],
    rng: &mut ChaCha8Rng,
) -> BTreeMap<String, f64> {
    let (below, above) = split;
    let searchable = |d: &Distribution| !d.is_single() && Spec::new(d).usable();
    let by_name: BTreeMap<&str, &Distribution> = space.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let mut out = BTreeMap::new();
    let finished = considered.iter().copied().filter(|t| matches!(t.state, State::Complete | State::Pruned));
    for group in decompose(finished) {
        let params: Vec<(&str, &Distribution)> = group.iter().filter_map(|n| by_name.get(n).map(|d| (*n, *d))).filter(|(_, d)| searchable(d)).collect();
        if params.is_empty() {
            continue;
        }
        for ((name, _), v) in params.iter().zip(tpe.sample_group(&params, below, above, rng)) {
            out.insert(name.to_string(), v);
        }
    }
    for (name, d) in space {
        if out.contains_key(name) {
            continue;
        }
        let v = if searchable(d) { tpe.sample_group(&[(name, d)], below, above, rng).first().copied() } else { None };
        out.insert(name.clone(), v.unwrap_or_else(|| sample_random(d, rng)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Conditions, Direction};
    use serde_json::json;

    fn with(number: u64, names: &[&str]) -> FrozenTrial {
        let d = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
        FrozenTrial {
            number,
            state: State::Complete,
            value: Some(0.0),
            params: names.iter().map(|n| (n.to_string(), (0.5, d.clone()))).collect(),
            intermediate: BTreeMap::new(),
            values: Some(0.0).into_iter().collect(),
            constraints: Vec::new(),
        }
    }

    #[test]
    fn groups_split_as_optuna_splits_them() {
        // Optuna 5.0's _SearchSpaceGroup on the same sequence of trials, after each one.
        let seq: [&[&str]; 5] = [&["a", "b", "c"], &["a", "b"], &["a", "d"], &["b", "d", "e"], &["a", "b", "c"]];
        let want: [&[&[&str]]; 5] = [
            &[&["a", "b", "c"]],
            &[&["a", "b"], &["c"]],
            &[&["a"], &["b"], &["c"], &["d"]],
            &[&["a"], &["b"], &["c"], &["d"], &["e"]],
            &[&["a"], &["b"], &["c"], &["d"], &["e"]],
        ];
        let trials: Vec<FrozenTrial> = seq.iter().enumerate().map(|(i, names)| with(i as u64, names)).collect();
        for (k, want) in want.iter().enumerate() {
            let got: Vec<Vec<&str>> = decompose(&trials[..=k]).into_iter().map(|g| g.into_iter().collect()).collect();
            assert_eq!(got, want.iter().map(|g| g.to_vec()).collect::<Vec<_>>(), "after trial {k}");
        }
        // Parameters that always come together stay one group.
        let together: Vec<FrozenTrial> =
            (0..6).map(|i| if i % 2 == 0 { with(i, &["name", "lr", "m", "nesterov"]) } else { with(i, &["name", "lr"]) }).collect();
        let got: Vec<Vec<&str>> = decompose(&together).into_iter().map(|g| g.into_iter().collect()).collect();
        assert_eq!(got, vec![vec!["lr", "name"], vec!["m", "nesterov"]]);
    }

    /// A conditional toy: `kind` picks which of `x` and `y` exists; the optimum is kind "a" with x near 0.8
    /// and z near 0.
    fn toy() -> (Space, Conditions) {
        let unit = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
        let space: Space = vec![
            ("kind".into(), Distribution::Categorical { choices: vec![json!("a"), json!("b"), json!("c")] }),
            ("x".into(), unit.clone()),
            ("y".into(), unit),
            ("z".into(), Distribution::Float { low: -5.0, high: 5.0, log: false, step: None }),
        ];
        let spec = json!([
            { "name": "kind" },
            { "name": "x", "when": { "kind": "a" } },
            { "name": "y", "when": { "kind": ["b"] } },
            { "name": "z" },
        ]);
        let conditions = Conditions::parse(&spec, &space).unwrap();
        (space, conditions)
    }

    fn objective(p: &BTreeMap<String, f64>) -> f64 {
        let z2 = p["z"].powi(2) / 25.0;
        match p["kind"] as usize {
            0 => (p["x"] - 0.8).powi(2) * 4.0 + z2,
            1 => 0.3 + (p["y"] - 0.2).powi(2) + z2,
            _ => 0.6 + z2,
        }
    }

    fn study(sampler: &TpeSampler, space: &Space, conditions: &Conditions, n: u64) -> Vec<FrozenTrial> {
        let mut trials = Vec::new();
        for number in 0..n {
            let mut p = sampler.sample(space, &trials, Direction::Minimize, number);
            conditions.retain_active(space, &mut p);
            assert_eq!(p.contains_key("x"), p["kind"] == 0.0);
            assert_eq!(p.contains_key("y"), p["kind"] == 1.0);
            let value = objective(&p);
            let params = p.iter().map(|(n, v)| (n.clone(), (*v, space.iter().find(|(s, _)| s == n).unwrap().1.clone()))).collect();
            trials.push(FrozenTrial {
                number,
                state: State::Complete,
                value: Some(value),
                params,
                intermediate: BTreeMap::new(),
                values: Some(value).into_iter().collect(),
                constraints: Vec::new(),
            });
        }
        trials
    }

    #[test]
    fn group_tpe_finds_the_conditional_optimum_better_than_random() {
        let (space, conditions) = toy();
        let best = |t: &[FrozenTrial]| t.iter().filter_map(|t| t.value).fold(f64::INFINITY, f64::min);
        let (mut group_total, mut random_total, mut late_a) = (0.0, 0.0, 0);
        for seed in 0..20 {
            let group = study(&TpeSampler { seed, group: true, ..TpeSampler::default() }, &space, &conditions, 50);
            group_total += best(&group);
            late_a += group[30..].iter().filter(|t| t.params.contains_key("x")).count();
            random_total += best(&study(&TpeSampler { seed, n_startup_trials: usize::MAX, ..TpeSampler::default() }, &space, &conditions, 50));
        }
        assert!(group_total < 0.5 * random_total, "group TPE {group_total} vs random {random_total}");
        // Random sampling picks kind "a" a third of the time (133 of 400 late trials).
        assert!(late_a > 200, "kind \"a\" in only {late_a} of 400 late trials");
    }

    #[test]
    fn group_sampling_is_reproducible_and_fills_every_parameter() {
        let (space, conditions) = toy();
        let sampler = TpeSampler { seed: 3, group: true, ..TpeSampler::default() };
        let trials = study(&sampler, &space, &conditions, 30);
        let a = sampler.sample(&space, &trials, Direction::Minimize, 30);
        assert_eq!(a, sampler.sample(&space, &trials, Direction::Minimize, 30));
        assert_eq!(a.len(), space.len());
        assert!(space.iter().all(|(n, d)| d.contains(a[n])));
    }
}
