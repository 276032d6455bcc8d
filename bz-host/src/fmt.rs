//! Number and shape formatting shared by the console, the trainer's messages, `bz eval`, `bz validate` and
//! `bz tune`: a leaf module, so none of them has to import another for a number's look.

/// `1.23e-3`-style for small or large values, plain decimals otherwise.
pub fn fmt_value(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// A throughput with a `k`/`M` suffix: `1.5k`, `2.00M`.
pub fn fmt_rate(samples_per_s: f64) -> String {
    if samples_per_s >= 1e6 {
        format!("{:.2}M", samples_per_s / 1e6)
    } else if samples_per_s >= 1e3 {
        format!("{:.1}k", samples_per_s / 1e3)
    } else {
        format!("{samples_per_s:.0}")
    }
}

/// A tensor shape as `[1, 28, 28]`.
pub fn fmt_shape(shape: &[i64]) -> String {
    format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_rates_and_shapes() {
        assert_eq!(fmt_value(0.5), "0.5000");
        assert_eq!(fmt_value(1e-5), "1.000e-5");
        assert_eq!(fmt_rate(1500.0), "1.5k");
        assert_eq!(fmt_rate(2e6), "2.00M");
        assert_eq!(fmt_shape(&[1, 28, 28]), "[1, 28, 28]");
    }
}
