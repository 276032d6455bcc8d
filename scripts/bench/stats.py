"""What the sampler benchmarks (scripts/bench-tune, scripts/bench-cmaes) share to compare two samplers' best values."""
import math
import statistics


def mann_whitney(x, y):
    """Two-sided Mann-Whitney U test, normal approximation with tie and continuity corrections: (U of x, p)."""
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    ranks, ties, i = [0.0] * len(pooled), 0.0, 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    n1, n2 = len(x), len(y)
    r1 = sum(r for r, (_, side) in zip(ranks, pooled) if side == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    nn = n1 + n2
    var = n1 * n2 / 12 * ((nn + 1) - ties / (nn * (nn - 1)))
    if var <= 0:
        return u1, 1.0
    z = (abs(u1 - mu) - 0.5) / math.sqrt(var)
    return u1, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def verdict(ours, theirs):
    """`same` unless the difference is significant at 5%, minimising."""
    _, p = mann_whitney(ours, theirs)
    if p >= 0.05:
        return p, "same"
    return p, "bz better" if statistics.median(ours) < statistics.median(theirs) else "bz worse"


def fmt(v):
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
