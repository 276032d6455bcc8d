//! Oracle test: `bz_host::metrics` must agree with scikit-learn on random data.
//!
//! The data is generated here with a fixed seed, handed to the workspace's test venv
//! (`scripts/setup --python` creates it) as JSON, scored there with `sklearn.metrics`, and the
//! results are compared to 1e-9 relative. Without the venv these tests fail rather than skip:
//! a metric silently left unchecked is worse than a red test with instructions.

use bz_host::metrics::{top_k_hits, Average, ConfusionMatrix, RegressionMetrics};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP_HINT: &str = "run scripts/setup --python first";

/// Scores every case of every section it is given; prints one JSON object with the same sections.
const SKLEARN_SCRIPT: &str = r#"
import json, sys
import numpy as np
from sklearn import metrics as m

with open(sys.argv[1]) as f:
    data = json.load(f)

AVERAGES = ("macro", "micro", "weighted")
SCORERS = (("precision", m.precision_score), ("recall", m.recall_score), ("f1", m.f1_score))

def classification(case):
    labels = list(range(case["num_classes"]))
    t, p = case["targets"], case["preds"]
    out = {
        "accuracy": float(m.accuracy_score(t, p)),
        "confusion_matrix": m.confusion_matrix(t, p, labels=labels).tolist(),
    }
    for name, score in SCORERS:
        out[name] = {a: float(score(t, p, labels=labels, average=a, zero_division=0)) for a in AVERAGES}
        out[name]["per_class"] = score(t, p, labels=labels, average=None, zero_division=0).tolist()
    return out

def regression(case):
    t = np.asarray(case["targets"], dtype=np.float64)
    p = np.asarray(case["preds"], dtype=np.float64)
    return {
        "mse": float(m.mean_squared_error(t, p)),
        "mae": float(m.mean_absolute_error(t, p)),
        "r2": float(m.r2_score(t, p)),
    }

def top_k(case):
    labels = list(range(case["num_classes"]))
    s = np.asarray(case["scores"], dtype=np.float64)
    hits = [m.top_k_accuracy_score(case["targets"], s, k=k, labels=labels, normalize=False)
            for k in case["k"]]
    return {"hits": [float(h) for h in hits]}

SECTIONS = {"classification": classification, "regression": regression, "top_k": top_k}
print(json.dumps({name: [fn(case) for case in data.get(name, [])] for name, fn in SECTIONS.items()}))
"#;

/// xorshift64: deterministic data without pulling in a RNG crate.
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1), exactly representable as f32.
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn pick(&mut self, choices: &[i64]) -> i64 {
        choices[self.below(choices.len() as u64) as usize]
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Deletes the JSON hand-over file even when an assertion fails.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the scikit-learn script on `input` and returns the section `name` of its answer.
fn sklearn(name: &str, input: Value) -> Vec<Value> {
    let python = workspace_root().join(".venv/bin/python");
    assert!(python.exists(), "no test venv at {}: {SETUP_HINT}", python.display());
    let file = TempFile(std::env::temp_dir().join(format!("bz-metrics-sklearn-{}-{name}.json", std::process::id())));
    std::fs::write(&file.0, input.to_string()).unwrap();
    let output = Command::new(&python)
        .arg("-c")
        .arg(SKLEARN_SCRIPT)
        .arg(&file.0)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} ({SETUP_HINT})", python.display()));
    assert!(
        output.status.success(),
        "{} failed ({}); if scikit-learn is missing, {SETUP_HINT}\n{}",
        python.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    answer[name].as_array().unwrap().clone()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Relative 1e-9, with a 1e-12 floor so values that are zero up to rounding compare equal.
#[track_caller]
fn assert_close(what: &str, ours: f64, theirs: f64) {
    let tolerance = (1e-9 * ours.abs().max(theirs.abs())).max(1e-12);
    assert!((ours - theirs).abs() <= tolerance, "{what}: bz {ours} vs scikit-learn {theirs}");
}

#[track_caller]
fn assert_all_close(what: &str, ours: &[f64], theirs: &Value) {
    let theirs = theirs.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    for (i, (&a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_close(&format!("{what}[{i}]"), a, num(b));
    }
}

struct ClassificationCase {
    name: &'static str,
    num_classes: usize,
    targets: Vec<i64>,
    preds: Vec<i64>,
}

fn classification_cases(rng: &mut XorShift) -> Vec<ClassificationCase> {
    let mut cases = Vec::new();

    // 6 classes: 2 has targets but is never predicted, 4 is predicted but never a target,
    // 5 never occurs at all -- macro averages must still count all six.
    let targets: Vec<i64> = (0..997).map(|_| rng.pick(&[0, 1, 2, 3])).collect();
    let preds = targets.iter().map(|&t| if t != 2 && rng.below(2) == 0 { t } else { rng.pick(&[0, 1, 3, 4]) }).collect();
    cases.push(ClassificationCase { name: "absent classes", num_classes: 6, targets, preds });

    // 7 classes, skewed targets, 40% correct
    let targets: Vec<i64> = (0..2000).map(|_| (rng.below(7) * rng.below(7) / 6) as i64).collect();
    let preds = targets.iter().map(|&t| if rng.below(5) < 2 { t } else { rng.below(7) as i64 }).collect();
    cases.push(ClassificationCase { name: "skewed", num_classes: 7, targets, preds });

    let targets: Vec<i64> = (0..301).map(|_| rng.below(2) as i64).collect();
    let preds = targets.iter().map(|&t| if rng.below(4) == 0 { 1 - t } else { t }).collect();
    cases.push(ClassificationCase { name: "binary", num_classes: 2, targets, preds });

    let targets: Vec<i64> = (0..50).map(|_| rng.below(3) as i64).collect();
    let preds = targets.iter().map(|&t| (t + 1) % 3).collect();
    cases.push(ClassificationCase { name: "always wrong", num_classes: 3, targets, preds });
    cases
}

#[test]
fn classification_matches_sklearn() {
    let cases = classification_cases(&mut XorShift(0x9e37_79b9_7f4a_7c15));
    let input = json!({
        "classification": cases.iter().map(|c| json!({
            "num_classes": c.num_classes, "targets": c.targets, "preds": c.preds,
        })).collect::<Vec<_>>()
    });
    let expected = sklearn("classification", input);

    for (case, theirs) in cases.iter().zip(&expected) {
        // streamed in uneven batches, and separately merged from two halves: both must agree
        let mut cm = ConfusionMatrix::new(case.num_classes);
        for (t, p) in case.targets.chunks(61).zip(case.preds.chunks(61)) {
            cm.add(t, p).unwrap();
        }
        let half = case.targets.len() / 2;
        let mut merged = ConfusionMatrix::new(case.num_classes);
        merged.add(&case.targets[..half], &case.preds[..half]).unwrap();
        let mut rest = ConfusionMatrix::new(case.num_classes);
        rest.add(&case.targets[half..], &case.preds[half..]).unwrap();
        merged.merge(&rest).unwrap();
        assert_eq!(cm, merged, "{}: streamed vs merged", case.name);

        let rows: Vec<Vec<u64>> = serde_json::from_value(theirs["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.rows(), rows, "{}: confusion matrix", case.name);
        assert_close(&format!("{} accuracy", case.name), cm.accuracy(), num(&theirs["accuracy"]));
        for avg in Average::ALL {
            let what = |metric: &str| format!("{} {metric} {}", case.name, avg.name());
            let a = avg.name();
            assert_close(&what("precision"), cm.precision(avg), num(&theirs["precision"][a]));
            assert_close(&what("recall"), cm.recall(avg), num(&theirs["recall"][a]));
            assert_close(&what("f1"), cm.f1(avg), num(&theirs["f1"][a]));
        }
        let what = |metric: &str| format!("{} per-class {metric}", case.name);
        assert_all_close(&what("precision"), &cm.per_class_precision(), &theirs["precision"]["per_class"]);
        assert_all_close(&what("recall"), &cm.per_class_recall(), &theirs["recall"]["per_class"]);
        assert_all_close(&what("f1"), &cm.per_class_f1(), &theirs["f1"]["per_class"]);
    }
}

struct RegressionCase {
    name: &'static str,
    width: usize,
    targets: Vec<f32>,
    preds: Vec<f32>,
}

impl RegressionCase {
    /// scikit-learn's shapes: `(n,)` for one output, `(n, width)` for several. Values go over as
    /// the f64 they are exactly equal to, so Python sees the very same numbers.
    fn to_json(&self, values: &[f32]) -> Value {
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        if self.width == 1 {
            json!(wide(values))
        } else {
            json!(values.chunks(self.width).map(wide).collect::<Vec<_>>())
        }
    }
}

/// Builds `samples` rows, each output column made by `column(output, rng) -> (target, pred)`.
fn regression_case(
    name: &'static str,
    width: usize,
    samples: usize,
    rng: &mut XorShift,
    column: impl Fn(usize, &mut XorShift) -> (f32, f32),
) -> RegressionCase {
    let (mut targets, mut preds) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        for output in 0..width {
            let (t, p) = column(output, rng);
            targets.push(t);
            preds.push(p);
        }
    }
    RegressionCase { name, width, targets, preds }
}

fn regression_cases(rng: &mut XorShift) -> Vec<RegressionCase> {
    vec![
        regression_case("single output", 1, 5000, rng, |_, rng| {
            let t = 3.0 + 2.0 * rng.unit();
            (t, t + 0.3 * (rng.unit() - 0.5))
        }),
        // far-from-zero targets (a naive variance loses digits), a constant target predicted
        // imperfectly (sklearn scores that output 0), and predictions worse than the mean
        regression_case("three outputs", 3, 20_000, rng, |output, rng| match output {
            0 => {
                let t = 10_000.0 + rng.unit();
                (t, t + 0.1 * (rng.unit() - 0.5))
            }
            1 => (2.5, 2.5 + 0.01 * rng.unit()),
            _ => (rng.unit(), rng.unit() * 4.0 - 1.0),
        }),
        // a constant target predicted perfectly (sklearn scores that output 1)
        regression_case("perfect constant", 2, 1000, rng, |output, rng| match output {
            0 => {
                let t = -50.0 * rng.unit();
                (t, t + rng.unit() - 0.5)
            }
            _ => (-7.0, -7.0),
        }),
    ]
}

#[test]
fn regression_matches_sklearn() {
    let cases = regression_cases(&mut XorShift(0x0123_4567_89ab_cdef));
    let input = json!({
        "regression": cases.iter().map(|c| json!({
            "targets": c.to_json(&c.targets), "preds": c.to_json(&c.preds),
        })).collect::<Vec<_>>()
    });
    let expected = sklearn("regression", input);

    for (case, theirs) in cases.iter().zip(&expected) {
        let mut metrics = RegressionMetrics::new(case.width);
        // batches of 1, 2, 4, ... 512 samples, then the rest
        let (mut start, mut samples) = (0, 1);
        while start < case.targets.len() {
            let end = (start + samples * case.width).min(case.targets.len());
            metrics.add(&case.targets[start..end], &case.preds[start..end]).unwrap();
            start = end;
            samples = (samples * 2).min(512);
        }
        assert_eq!(metrics.count() as usize * case.width, case.targets.len(), "{}", case.name);
        assert_close(&format!("{} mse", case.name), metrics.mse(), num(&theirs["mse"]));
        assert_close(&format!("{} mae", case.name), metrics.mae(), num(&theirs["mae"]));
        assert_close(&format!("{} r2", case.name), metrics.r2(), num(&theirs["r2"]));
    }
}

struct TopKCase {
    num_classes: usize,
    ks: Vec<usize>,
    targets: Vec<i64>,
    scores: Vec<f32>,
}

/// Random scores with no ties inside a row: on ties bz deliberately favours the target and
/// scikit-learn the higher class index, so only tie-free data has one right answer.
fn distinct_row(rng: &mut XorShift, num_classes: usize) -> Vec<f32> {
    loop {
        let row: Vec<f32> = (0..num_classes).map(|_| rng.unit()).collect();
        let mut sorted = row.clone();
        sorted.sort_by(f32::total_cmp);
        if sorted.windows(2).all(|w| w[0] < w[1]) {
            return row;
        }
    }
}

fn top_k_case(rng: &mut XorShift, num_classes: usize, samples: usize, ks: Vec<usize>) -> TopKCase {
    let targets = (0..samples).map(|_| rng.below(num_classes as u64) as i64).collect();
    let scores = (0..samples).flat_map(|_| distinct_row(rng, num_classes)).collect();
    TopKCase { num_classes, ks, targets, scores }
}

#[test]
fn top_k_matches_sklearn_without_ties() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    // k = num_classes and beyond: scikit-learn warns and counts every sample, as we do
    let cases = [top_k_case(&mut rng, 6, 1500, (1..=7).collect()), top_k_case(&mut rng, 10, 800, vec![1, 3, 5, 9])];
    let input = json!({
        "top_k": cases.iter().map(|c| json!({
            "num_classes": c.num_classes,
            "k": c.ks,
            "targets": c.targets,
            "scores": c.scores.chunks(c.num_classes)
                .map(|row| row.iter().map(|&s| f64::from(s)).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>()
    });
    let expected = sklearn("top_k", input);

    for (case, theirs) in cases.iter().zip(&expected) {
        let theirs = theirs["hits"].as_array().unwrap();
        for (&k, their_hits) in case.ks.iter().zip(theirs) {
            // scored in batches of 100 samples, as an evaluation loop would
            let hits: u64 =
                case.targets.chunks(100).zip(case.scores.chunks(100 * case.num_classes)).map(|(t, s)| top_k_hits(s, case.num_classes, t, k).unwrap()).sum();
            assert_close(&format!("top-{k} hits over {} classes", case.num_classes), hits as f64, num(their_hits));
        }
    }
}
