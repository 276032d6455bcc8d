//! Histograms of parameters and gradients, computed by the host for plugins that ask for them
//! (`Directive::WANT_HISTOGRAMS`), so plugins stay free of tensors. The shape is TensorBoard's HistogramProto:
//! min, max, num, sum, sum of squares, and equal-width buckets given by their right edges and counts.

use anyhow::Result;
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

/// Buckets per histogram: enough to show a distribution's shape, small enough for a JSON payload.
pub const BUCKETS: usize = 64;

/// One tensor's histogram; non-finite values are counted in `num` and `nonfinite` but in no bucket.
pub fn of(t: &Tensor) -> Result<Value> {
    let flat = t.f_detach()?.f_to_kind(Kind::Float)?.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?;
    let values: Vec<f32> = Vec::try_from(&flat)?;
    Ok(from_values(&values))
}

pub fn from_values(values: &[f32]) -> Value {
    let finite: Vec<f64> = values.iter().filter(|v| v.is_finite()).map(|&v| v as f64).collect();
    let nonfinite = values.len() - finite.len();
    if finite.is_empty() {
        return json!({ "min": 0.0, "max": 0.0, "num": values.len(), "sum": 0.0, "sum_squares": 0.0, "bucket_limit": [], "bucket": [], "nonfinite": nonfinite });
    }
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = finite.iter().sum();
    let sum_squares: f64 = finite.iter().map(|v| v * v).sum();
    let (limits, counts) = if max > min {
        let width = (max - min) / BUCKETS as f64;
        let mut counts = vec![0u64; BUCKETS];
        for v in &finite {
            let i = (((v - min) / width) as usize).min(BUCKETS - 1);
            counts[i] += 1;
        }
        let mut limits: Vec<f64> = (1..=BUCKETS).map(|i| min + width * i as f64).collect();
        limits[BUCKETS - 1] = max;
        (limits, counts)
    } else {
        (vec![max], vec![finite.len() as u64])
    };
    json!({ "min": min, "max": max, "num": values.len(), "sum": sum, "sum_squares": sum_squares,
            "bucket_limit": limits, "bucket": counts, "nonfinite": nonfinite })
}

/// `{name: histogram}` for named tensors; undefined tensors (a parameter without a gradient) are left out.
pub fn named<'a>(tensors: impl Iterator<Item = (&'a str, &'a Tensor)>) -> Result<Value> {
    let mut out = Map::new();
    for (name, t) in tensors {
        if t.defined() {
            out.insert(name.to_string(), of(t)?);
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_and_count_everything() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 / 10.0).collect();
        let h = from_values(&v);
        assert_eq!(h["num"], 1000);
        assert_eq!(h["min"], 0.0);
        assert_eq!(h["max"], 99.9f32 as f64);
        let counts: Vec<u64> = h["bucket"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        assert_eq!(counts.len(), BUCKETS);
        assert_eq!(counts.iter().sum::<u64>(), 1000);
        assert!((h["sum"].as_f64().unwrap() - v.iter().map(|&x| x as f64).sum::<f64>()).abs() < 1e-6);
        let limits = h["bucket_limit"].as_array().unwrap();
        assert_eq!(limits.last().unwrap().as_f64().unwrap(), h["max"].as_f64().unwrap());
    }

    #[test]
    fn constant_and_non_finite_values() {
        let h = from_values(&[2.0, 2.0, f32::NAN]);
        assert_eq!(h["bucket"], json!([2]));
        assert_eq!(h["bucket_limit"], json!([2.0]));
        assert_eq!(h["num"], 3);
        assert_eq!(h["nonfinite"], 1);
    }
}
