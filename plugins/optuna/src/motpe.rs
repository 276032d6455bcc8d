//! TPE's split of the finished trials when the study has several objectives (MOTPE) or constraints, as Optuna
//! 5's `_split_trials` does it: feasible COMPLETE trials first, by non-domination rank with the boundary rank
//! cut by greedy hypervolume subset selection (one objective: by value); then feasible PRUNED trials by their
//! last step and value; then infeasible trials by their summed violation. RUNNING trials are always "above".
//! Below, with several objectives, γ(n) = ⌈0.1 n⌉ without the single-objective cap of 25.

use crate::pareto::{hssp, leading_ranks, losses, penalty, reference_point};
use crate::space::{Direction, FrozenTrial, State};
use crate::tpe::{complete_key, pruned_key};

/// Optuna's `default_gamma_multiobjective`.
pub fn gamma_multi(n: usize) -> usize {
    n.div_ceil(10)
}

/// Splits `trials` into (below, above), each in number order.
pub fn split<'a>(trials: &[&'a FrozenTrial], n_below: usize, directions: &[Direction]) -> (Vec<&'a FrozenTrial>, Vec<&'a FrozenTrial>) {
    let first = directions.first().copied().unwrap_or_default();
    let mut complete = Vec::new();
    let mut pruned = Vec::new();
    let mut infeasible = Vec::new();
    let mut running = Vec::new();
    for t in trials.iter().copied() {
        match t.state {
            State::Running => running.push(t),
            _ if penalty(t) > 0.0 => infeasible.push(t),
            State::Complete => complete.push(t),
            State::Pruned => pruned.push(t),
            _ => {}
        }
    }
    let (mut below, mut above) = split_complete(&complete, n_below.min(complete.len()), directions);
    let mut n_left = n_below.saturating_sub(below.len());
    pruned.sort_by(|a, b| {
        let (ka, kb) = (pruned_key(a, first), pruned_key(b, first));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    let np = n_left.min(pruned.len());
    below.extend(&pruned[..np]);
    above.extend(&pruned[np..]);
    n_left = n_left.saturating_sub(np);
    infeasible.sort_by(|a, b| penalty(a).total_cmp(&penalty(b)));
    let ni = n_left.min(infeasible.len());
    below.extend(&infeasible[..ni]);
    above.extend(&infeasible[ni..]);
    above.extend(running);
    below.sort_by_key(|t| t.number);
    above.sort_by_key(|t| t.number);
    (below, above)
}

fn split_complete<'a>(trials: &[&'a FrozenTrial], n_below: usize, directions: &[Direction]) -> (Vec<&'a FrozenTrial>, Vec<&'a FrozenTrial>) {
    if directions.len() <= 1 {
        let first = directions.first().copied().unwrap_or_default();
        let mut sorted = trials.to_vec();
        sorted.sort_by(|a, b| complete_key(a, first).total_cmp(&complete_key(b, first)));
        return (sorted[..n_below].to_vec(), sorted[n_below..].to_vec());
    }
    if n_below == 0 || n_below == trials.len() {
        return if n_below == 0 { (Vec::new(), trials.to_vec()) } else { (trials.to_vec(), Vec::new()) };
    }
    let l: Vec<Vec<f64>> = trials.iter().map(|t| losses(t, directions)).collect();
    let ranks = leading_ranks(&l, n_below);
    let mut chosen = vec![false; trials.len()];
    let mut taken = 0;
    let mut rank = 0;
    loop {
        let members: Vec<usize> = (0..trials.len()).filter(|&i| ranks[i] == rank).collect();
        if members.is_empty() {
            break;
        }
        if taken + members.len() <= n_below {
            members.iter().for_each(|&i| chosen[i] = true);
            taken += members.len();
            rank += 1;
            continue;
        }
        let pts: Vec<Vec<f64>> = members.iter().map(|&i| l[i].clone()).collect();
        for k in hssp_unique(&pts, n_below - taken) {
            chosen[members[k]] = true;
        }
        break;
    }
    let below = (0..trials.len()).filter(|&i| chosen[i]).map(|i| trials[i]).collect();
    let above = (0..trials.len()).filter(|&i| !chosen[i]).map(|i| trials[i]).collect();
    (below, above)
}

/// Optuna's `_solve_hssp`: duplicates of a loss vector are chosen only after every distinct one (and then in
/// order); the reference point comes from the boundary rank's points.
fn hssp_unique(pts: &[Vec<f64>], k: usize) -> Vec<usize> {
    let mut unique: Vec<usize> = Vec::new();
    for i in 0..pts.len() {
        if !unique.iter().any(|&j| pts[j] == pts[i]) {
            unique.push(i);
        }
    }
    if unique.len() < k {
        let dups: Vec<usize> = (0..pts.len()).filter(|i| !unique.contains(i)).take(k - unique.len()).collect();
        return unique.into_iter().chain(dups).collect();
    }
    let upts: Vec<Vec<f64>> = unique.iter().map(|&i| pts[i].clone()).collect();
    let reference = reference_point(pts);
    hssp(&upts, k, &reference).into_iter().map(|u| unique[u]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn t(number: u64, state: State, values: &[f64], constraints: &[f64]) -> FrozenTrial {
        FrozenTrial {
            number,
            state,
            value: values.first().copied(),
            params: BTreeMap::new(),
            intermediate: BTreeMap::new(),
            values: values.to_vec(),
            constraints: constraints.to_vec(),
        }
    }

    #[test]
    fn front_first_then_hypervolume_tiebreak() {
        let d = [Direction::Minimize, Direction::Minimize];
        let trials = [
            t(0, State::Complete, &[1.0, 9.0], &[]),
            t(1, State::Complete, &[5.0, 5.0], &[]),
            t(2, State::Complete, &[9.0, 1.0], &[]),
            t(3, State::Complete, &[6.0, 6.0], &[]),
            t(4, State::Running, &[], &[]),
        ];
        let refs: Vec<&FrozenTrial> = trials.iter().collect();
        let (below, above) = split(&refs, 1, &d);
        // One of the front's three: the middle point adds the most hypervolume against ref (9.9, 9.9).
        assert_eq!(below.iter().map(|t| t.number).collect::<Vec<_>>(), vec![1]);
        assert_eq!(above.iter().map(|t| t.number).collect::<Vec<_>>(), vec![0, 2, 3, 4]);
        let (below, _) = split(&refs, 3, &d);
        assert_eq!(below.iter().map(|t| t.number).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn infeasible_trials_come_last() {
        let d = [Direction::Minimize];
        let trials = [t(0, State::Complete, &[0.1], &[0.5]), t(1, State::Complete, &[0.9], &[-1.0]), t(2, State::Complete, &[0.5], &[0.0])];
        let refs: Vec<&FrozenTrial> = trials.iter().collect();
        let (below, _) = split(&refs, 2, &d);
        // Trial 0 has the best value but violates its constraint.
        assert_eq!(below.iter().map(|t| t.number).collect::<Vec<_>>(), vec![1, 2]);
    }
}
