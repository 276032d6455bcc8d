//! Several objectives: domination (with constraints, feasible first), non-domination ranks, crowding distance,
//! hypervolume and its greedy subset selection (HSSP), as Optuna 5's `_multi_objective`, `nsgaii` and
//! `_hypervolume` modules define them. Values here are losses: every objective minimised (maximised ones are
//! negated first, by [`losses`]).

use crate::space::{Direction, FrozenTrial, State};

/// The trial system attribute holding a trial's constraint values as a list, where Optuna's `constraints_func`
/// (and `_process_constraints_after_trial`) stores them.
pub const CONSTRAINTS_KEY: &str = "constraints";

/// The trial's objective values as losses (maximised objectives negated); NaN when it has none.
pub fn losses(t: &FrozenTrial, directions: &[Direction]) -> Vec<f64> {
    directions
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v = t.values.get(i).copied().unwrap_or(f64::NAN);
            match d {
                Direction::Minimize => v,
                Direction::Maximize => -v,
            }
        })
        .collect()
}

/// `a` dominates `b`: no worse in every objective and better in one (losses).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
}

/// The summed violation of the constraints (`c > 0` violates), 0 for a feasible trial or one without constraints.
pub fn penalty(t: &FrozenTrial) -> f64 {
    t.constraints.iter().filter(|c| **c > 0.0).sum()
}

/// Optuna's `_constrained_dominates` between COMPLETE trials: feasible beats infeasible, the smaller violation
/// wins between infeasible ones, plain domination between feasible ones.
pub fn constrained_dominates(a: &FrozenTrial, b: &FrozenTrial, directions: &[Direction]) -> bool {
    if a.state != State::Complete {
        return false;
    }
    if b.state != State::Complete {
        return true;
    }
    let (pa, pb) = (penalty(a), penalty(b));
    match (pa <= 0.0, pb <= 0.0) {
        (true, true) => dominates(&losses(a, directions), &losses(b, directions)),
        (true, false) => true,
        (false, true) => false,
        (false, false) => pa < pb,
    }
}

/// Non-domination rank of each point (0 = the Pareto front), as Optuna's `_fast_non_domination_rank`: with
/// `penalty`, feasible points (penalty 0) are ranked among themselves first, then infeasible ones by penalty (lower
/// is better, equal penalties share a rank); NaN penalties rank last.
pub fn non_domination_ranks(losses: &[Vec<f64>], penalty: Option<&[f64]>) -> Vec<usize> {
    let Some(penalty) = penalty else { return plain_ranks(losses) };
    let n = losses.len();
    let mut ranks = vec![0usize; n];
    let feasible: Vec<usize> = (0..n).filter(|&i| penalty[i] <= 0.0).collect();
    let feasible_ranks = plain_ranks(&feasible.iter().map(|&i| losses[i].clone()).collect::<Vec<_>>());
    for (k, &i) in feasible.iter().enumerate() {
        ranks[i] = feasible_ranks[k];
    }
    let mut next = feasible_ranks.iter().max().map_or(0, |m| m + 1);
    let mut infeasible: Vec<usize> = (0..n).filter(|&i| penalty[i] > 0.0).collect();
    infeasible.sort_by(|&a, &b| penalty[a].total_cmp(&penalty[b]));
    for (k, &i) in infeasible.iter().enumerate() {
        if k > 0 && penalty[i] > penalty[infeasible[k - 1]] {
            next += 1;
        }
        ranks[i] = next;
    }
    let last = if infeasible.is_empty() { next } else { next + 1 };
    for i in (0..n).filter(|&i| penalty[i].is_nan()) {
        ranks[i] = last;
    }
    ranks
}

/// Plain non-dominated sorting: peel off fronts until every point has a rank.
fn plain_ranks(losses: &[Vec<f64>]) -> Vec<usize> {
    leading_ranks(losses, losses.len())
}

/// The first fronts only, until at least `n_needed` points have a rank; the others keep `usize::MAX`. What TPE's
/// split needs (as Optuna's `_fast_non_domination_rank(…, n_below=…)`): peeling every front of a long study
/// costs O(n² · fronts) per ask.
pub fn leading_ranks(losses: &[Vec<f64>], n_needed: usize) -> Vec<usize> {
    let n = losses.len();
    let mut ranks = vec![usize::MAX; n];
    let mut left: Vec<usize> = (0..n).collect();
    let mut rank = 0;
    while !left.is_empty() && n - left.len() < n_needed {
        let front: Vec<usize> = left.iter().copied().filter(|&i| !left.iter().any(|&j| j != i && dominates(&losses[j], &losses[i]))).collect();
        for &i in &front {
            ranks[i] = rank;
        }
        left.retain(|i| ranks[*i] == usize::MAX);
        rank += 1;
    }
    ranks
}

/// Optuna's crowding distance per point (sum over objectives of the neighbours' gap over the finite range).
pub fn crowding_distance(losses: &[Vec<f64>]) -> Vec<f64> {
    let n = losses.len();
    let mut dist = vec![0.0; n];
    let Some(m) = losses.first().map(Vec::len) else { return dist };
    // `k` indexes the objective inside every point, not `losses` itself.
    #[allow(clippy::needless_range_loop)]
    for k in 0..m {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| losses[a][k].total_cmp(&losses[b][k]));
        if losses[order[0]][k] == losses[order[n - 1]][k] {
            continue;
        }
        let mut vs = vec![f64::NEG_INFINITY];
        vs.extend(order.iter().map(|&i| losses[i][k]));
        vs.push(f64::INFINITY);
        let v_min = vs.iter().copied().find(|x| *x != f64::NEG_INFINITY).unwrap_or(0.0);
        let v_max = vs.iter().rev().copied().find(|x| *x != f64::INFINITY).unwrap_or(0.0);
        let width = if v_max - v_min > 0.0 { v_max - v_min } else { 1.0 };
        for (j, &i) in order.iter().enumerate() {
            let gap = if vs[j] == vs[j + 2] { 0.0 } else { vs[j + 2] - vs[j] };
            dist[i] += gap / width;
        }
    }
    dist
}

/// The hypervolume the points dominate up to `reference` (losses; points not below the reference add nothing).
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let pts: Vec<Vec<f64>> = points.iter().filter(|p| p.iter().zip(reference).all(|(x, r)| x < r)).cloned().collect();
    hv_rec(pts, reference)
}

/// Exact hypervolume by slicing along the last objective (fine for the few hundred points of a study).
fn hv_rec(mut pts: Vec<Vec<f64>>, reference: &[f64]) -> f64 {
    let m = reference.len();
    if pts.is_empty() {
        return 0.0;
    }
    if m == 1 {
        return reference[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
    }
    if m == 2 {
        pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let (mut vol, mut y) = (0.0, reference[1]);
        for p in pts {
            if p[1] < y {
                vol += (reference[0] - p[0]) * (y - p[1]);
                y = p[1];
            }
        }
        return vol;
    }
    pts.sort_by(|a, b| a[m - 1].total_cmp(&b[m - 1]));
    let mut vol = 0.0;
    for i in 0..pts.len() {
        let next = if i + 1 < pts.len() { pts[i + 1][m - 1] } else { reference[m - 1] };
        let height = next - pts[i][m - 1];
        if height > 0.0 {
            let slice: Vec<Vec<f64>> = pts[..=i].iter().map(|p| p[..m - 1].to_vec()).collect();
            vol += height * hv_rec(slice, &reference[..m - 1]);
        }
    }
    vol
}

/// Optuna's reference point for HSSP: `max(1.1 worst, 0.9 worst)` per objective, zeros replaced by a tiny value.
pub fn reference_point(points: &[Vec<f64>]) -> Vec<f64> {
    let m = points.first().map_or(0, Vec::len);
    (0..m)
        .map(|k| {
            let worst = points.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
            let r = (1.1 * worst).max(0.9 * worst);
            if r == 0.0 {
                1e-12
            } else {
                r
            }
        })
        .collect()
}

/// Greedy hypervolume subset selection: `k` of the points, each step the one adding the most hypervolume (ties:
/// the lower index, as `np.argmax`). Returns indices into `points`.
pub fn hssp(points: &[Vec<f64>], k: usize, reference: &[f64]) -> Vec<usize> {
    if k >= points.len() {
        return (0..points.len()).collect();
    }
    if !reference.iter().all(|r| r.is_finite()) {
        return (0..k).collect();
    }
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut chosen_pts: Vec<Vec<f64>> = Vec::with_capacity(k);
    let mut base = 0.0;
    while chosen.len() < k {
        let mut best: Option<(f64, usize)> = None;
        for (i, p) in points.iter().enumerate() {
            if chosen.contains(&i) {
                continue;
            }
            chosen_pts.push(p.clone());
            let gain = hypervolume(&chosen_pts, reference) - base;
            chosen_pts.pop();
            if best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, i));
            }
        }
        let Some((gain, i)) = best else { break };
        base += gain;
        chosen.push(i);
        chosen_pts.push(points[i].clone());
    }
    chosen
}

/// The COMPLETE trials no other COMPLETE trial dominates, feasible ones only when any trial has constraints
/// (Optuna's `best_trials`), in number order.
pub fn pareto_front<'a>(trials: &'a [FrozenTrial], directions: &[Direction]) -> Vec<&'a FrozenTrial> {
    let complete: Vec<&FrozenTrial> =
        trials.iter().filter(|t| t.state == State::Complete && t.values.len() == directions.len() && t.values.iter().all(|v| !v.is_nan())).collect();
    let constrained = trials.iter().any(|t| !t.constraints.is_empty());
    let pool: Vec<&FrozenTrial> = complete.into_iter().filter(|t| !constrained || (!t.constraints.is_empty() && penalty(t) <= 0.0)).collect();
    let l: Vec<Vec<f64>> = pool.iter().map(|t| losses(t, directions)).collect();
    pool.iter().enumerate().filter(|(i, _)| !l.iter().enumerate().any(|(j, o)| j != *i && dominates(o, &l[*i]))).map(|(_, t)| *t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[[f64; 2]]) -> Vec<Vec<f64>> {
        x.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn ranks_peel_fronts() {
        let pts = v(&[[1.0, 4.0], [2.0, 2.0], [4.0, 1.0], [3.0, 3.0], [5.0, 5.0]]);
        assert_eq!(non_domination_ranks(&pts, None), vec![0, 0, 0, 1, 2]);
        assert_eq!(leading_ranks(&pts, 3), vec![0, 0, 0, usize::MAX, usize::MAX]);
        assert_eq!(leading_ranks(&pts, 4), vec![0, 0, 0, 1, usize::MAX]);
        // Feasible first; among the infeasible, the smaller violation is better.
        assert_eq!(non_domination_ranks(&pts, Some(&[0.0, 2.0, 0.0, 1.0, 0.0])), vec![0, 3, 0, 2, 1]);
    }

    #[test]
    fn hypervolume_of_known_sets() {
        assert_eq!(hypervolume(&v(&[[1.0, 1.0]]), &[2.0, 2.0]), 1.0);
        assert_eq!(hypervolume(&v(&[[0.0, 1.0], [1.0, 0.0]]), &[2.0, 2.0]), 3.0);
        let three = vec![vec![0.0, 0.0, 0.0]];
        assert_eq!(hypervolume(&three, &[1.0, 2.0, 3.0]), 6.0);
        let two3 = vec![vec![0.0, 1.0, 0.0], vec![1.0, 0.0, 0.0]];
        assert_eq!(hypervolume(&two3, &[2.0, 2.0, 1.0]), 3.0);
    }

    #[test]
    fn hssp_picks_the_largest_contributions() {
        let pts = v(&[[0.0, 3.0], [1.0, 1.0], [3.0, 0.0], [1.1, 1.1]]);
        let picked = hssp(&pts, 1, &[4.0, 4.0]);
        assert_eq!(picked, vec![1]);
        let mut two = hssp(&pts, 3, &[4.0, 4.0]);
        two.sort();
        assert_eq!(two, vec![0, 1, 2]);
    }

    #[test]
    fn crowding_favours_the_ends() {
        let d = crowding_distance(&v(&[[0.0, 3.0], [1.0, 2.0], [3.0, 0.0]]));
        assert!(d[0].is_infinite() && d[2].is_infinite() && d[1].is_finite(), "{d:?}");
    }
}
