//! `data.test`: a test split evaluated at the end of `bz train` (the `test` line of metrics.jsonl) and by
//! `bz eval --split test`, and the config errors around it.

use bz_e2e::*;
use serde_json::{Map, Value};

fn test_metrics(v: &Value) -> Map<String, Value> {
    v.as_object().unwrap().iter().filter(|(k, _)| k.starts_with("test/")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[test]
fn the_test_line_equals_eval_on_the_best_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &fixtures::csv_with_test_split(dir.path()));
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "c"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("test/accuracy"), "the test metrics are printed: {}", out.stdout);
    let lines = read_jsonl(&dir.path().join("runs/c/metrics.jsonl"));
    let tests: Vec<&Value> = lines.iter().filter(|l| l["event"] == "test").collect();
    assert_eq!(tests.len(), 1, "one test line: {lines:?}");
    let line = tests[0];
    assert_eq!(line["checkpoint"], "best");
    assert_eq!(line["step"], lines.iter().rfind(|l| l["event"] == "epoch").unwrap()["step"]);
    let logged = test_metrics(line);
    assert!(logged.contains_key("test/loss") && logged.contains_key("test/f1_macro"), "{line}");
    assert!(logged["test/accuracy"].as_f64().unwrap() > 0.9, "{line}");

    let eval = bz(dir.path(), &["eval", "c.toml", "--run-name", "c", "--split", "test", "--json"]);
    assert_eq!(eval.code, 0, "{}", eval.all());
    let evaluated: Value = serde_json::from_str(eval.stdout.trim()).unwrap();
    assert_eq!(logged, test_metrics(&evaluated), "bz eval --split test on the best checkpoint gives the test line's values");

    // Training on from the last checkpoint replaces the test line: one per run, for the run as it ended.
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "c", "--resume", "--epochs", "8"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let lines = read_jsonl(&dir.path().join("runs/c/metrics.jsonl"));
    let tests: Vec<&Value> = lines.iter().filter(|l| l["event"] == "test").collect();
    assert_eq!(tests.len(), 1, "one test line after resuming: {lines:?}");
    assert_eq!(tests[0]["epoch"], 8);
}

#[test]
fn eval_split_test_without_a_test_split_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &fixtures::Digits::default().toml());
    let out = bz(dir.path(), &["eval", "c.toml", "--split", "test"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    assert!(out.stderr.contains("c.toml: `data.test`: is not set"), "{}", out.stderr);
}

#[test]
fn a_test_key_where_it_does_not_belong_is_named_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let digits = fixtures::Digits::default().toml().replace("source = \"digits\"\n", "source = \"digits\"\ntest = \"t.csv\"\n");
    let line = digits.lines().position(|l| l.starts_with("test =")).unwrap() + 1;
    write_config(dir.path(), "d.toml", &digits);
    let out = bz(dir.path(), &["train", "d.toml"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains(&format!("d.toml:{line}:8: `data.test`")) && out.stderr.contains("digits has no `test`"), "{}", out.stderr);

    // idx: "test" is the t10k files, which cannot be the validation split as well.
    let idx = "[data]\nsource = \"idx\"\npath = \"data\"\nval = \"test\"\ntest = \"test\"\n[model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 4 }]\n";
    write_config(dir.path(), "i.toml", idx);
    let out = bz(dir.path(), &["validate", "i.toml"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("i.toml:5:8: `data.test`") && out.stderr.contains("already the validation split"), "{}", out.stderr);
}
