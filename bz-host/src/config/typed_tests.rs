//! Tagged sections: a key of another variant, a wrong type or a typo inside a variant keeps its key path and line:col.

use super::*;

const MINIMAL: &str = "[model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 10 }]\n";

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(&format!("{MINIMAL}{text}"), Path::new("c.toml"), &[])
}

fn err(text: &str) -> ConfigError {
    parse_str(text).unwrap_err()
}

#[test]
fn a_key_of_another_source_names_its_source() {
    let e = err("[data]\nsource = \"digits\"\ntarget = \"y\"\n");
    assert!(e.to_string().starts_with("c.toml:5:10: `data.target`: "), "{e}");
    assert!(e.message.contains("applies to source = \"csv\"; digits has no `target`"), "{e}");
    let e = err("[data]\nsource = \"csv\"\npath = \"a.csv\"\ntarget = 0\nnoise = 0.5\n");
    assert_eq!((e.key.as_deref(), e.location), (Some("data.noise"), Some((7, 9))), "{e}");
    assert!(e.message.contains("source = \"synthetic\""), "{e}");
}

#[test]
fn the_default_source_is_named_when_it_was_implied() {
    let e = err("[data]\npath = \"data\"\n");
    assert_eq!(e.key.as_deref(), Some("data.path"));
    assert!(e.message.contains("\"idx\" or \"csv\" or \"safetensors\""), "{e}");
    assert!(e.message.contains("`source` is not set, so it is \"digits\""), "{e}");
}

#[test]
fn misplaced_optimizer_and_scheduler_keys() {
    let e = err("[optimizer]\nname = \"adam\"\nmomentum = 0.9\n");
    assert_eq!((e.key.as_deref(), e.location.map(|l| l.0)), (Some("optimizer.momentum"), Some(5)), "{e}");
    assert!(e.message.contains("name = \"sgd\" or \"rmsprop\"; adam has no `momentum`"), "{e}");
    let e = err("[scheduler]\nname = \"cosine\"\ngamma = 0.5\n");
    assert_eq!(e.key.as_deref(), Some("scheduler.gamma"), "{e}");
    assert!(e.message.contains("name = \"step\""), "{e}");
    let e = err("[optimizer]\nname = \"sgd\"\neps = 1e-6\n");
    assert_eq!(e.key.as_deref(), Some("optimizer.eps"), "{e}");
}

#[test]
fn wrong_types_and_typos_inside_a_variant_keep_their_place() {
    let e = err("[data]\nsource = \"synthetic\"\nsamples = \"many\"\n");
    assert_eq!((e.key.as_deref(), e.location), (Some("data.samples"), Some((5, 11))), "{e}");
    let e = err("[data]\nsource = \"csv\"\npath = \"a.csv\"\ntarget = 0\ndelimitr = \";\"\n");
    assert_eq!((e.key.as_deref(), e.location), (Some("data.delimitr"), Some((7, 1))), "{e}");
    assert!(e.message.contains("did you mean `delimiter`?"), "{e}");
    let e = err("[data]\nval_splt = 0.1\n");
    assert!(e.message.contains("did you mean `val_split`?"), "{e}");
    let e = err("[data]\nsource = \"csvv\"\n");
    assert_eq!(e.key.as_deref(), Some("data.source"));
    assert!(e.message.contains("did you mean `csv`?"), "{e}");
    let e = err("[data]\nsource = \"csv\"\npath = \"a.csv\"\nfeatures = [0, 1.5]\n");
    assert_eq!(e.key.as_deref(), Some("data.features[1]"), "{e}");
}

#[test]
fn a_missing_required_key_names_the_source() {
    let e = err("[data]\nsource = \"csv\"\npath = \"a.csv\"\n");
    assert_eq!((e.key.as_deref(), e.location.map(|l| l.0)), (Some("data"), Some(3)), "{e}");
    assert!(e.message.contains("missing field `target`; source = \"csv\" needs `target`"), "{e}");
    let e = err("[data]\nsource = \"idx\"\n");
    assert!(e.message.contains("needs `path`"), "{e}");
}

#[test]
fn per_source_values_are_checked() {
    let e = err("[data]\nsource = \"idx\"\npath = \"d\"\nval = \"t10k\"\n");
    assert_eq!((e.key.as_deref(), e.location), (Some("data.val"), Some((6, 7))), "{e}");
    let e = err("[data]\nsource = \"csv\"\npath = \"a.csv\"\ntarget = 0\ndelimiter = \";;\"\n");
    assert_eq!(e.key.as_deref(), Some("data.delimiter"));
}

#[test]
fn set_switches_variants() {
    let over = |sets: &[&str]| parse(MINIMAL, Path::new("c.toml"), &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let c = over(&["optimizer.name=sgd", "optimizer.momentum=0.9"]).unwrap();
    assert_eq!(c.optimizer.kind, OptimizerKind::Sgd(SgdOptions { momentum: 0.9, ..SgdOptions::default() }));
    let c = over(&["data.source=synthetic", "data.samples=50"]).unwrap();
    assert_eq!(c.data.source, DataSource::Synthetic(SyntheticData { samples: 50, ..SyntheticData::default() }));
    let e = over(&["optimizer.momentum=0.9"]).unwrap_err();
    assert!(e.message.contains("adam has no `momentum`") && e.message.contains("from --set optimizer.momentum"), "{e}");
    // A key of the file that does not fit the variant chosen by --set points at the file.
    let text = format!("{MINIMAL}[optimizer]\nbetas = [0.8, 0.9]\n");
    let e = parse(&text, Path::new("c.toml"), &["optimizer.name=sgd".into()]).unwrap_err();
    assert_eq!((e.key.as_deref(), e.location.map(|l| l.0)), (Some("optimizer.betas"), Some(4)), "{e}");
}

#[test]
fn pruner_and_params_are_typed() {
    let e = err("[tune.pruner]\ntype = \"median\"\nn_startup = 3\n");
    assert_eq!((e.key.as_deref(), e.location), (Some("tune.pruner.n_startup"), Some((5, 1))), "{e}");
    assert!(e.message.contains("did you mean `n_startup_trials`?"), "{e}");
    let e = err("[tune.pruner]\ntype = \"hyperband\"\npercentile = 3.0\n");
    assert!(e.message.contains("type = \"percentile\""), "{e}");
    let e = err("[tune.pruner]\ntype = \"percentile\"\npercentile = 120.0\n");
    assert_eq!(e.key.as_deref(), Some("tune.pruner.percentile"), "{e}");
    let e = err("[tune.params]\n\"optimizer.lr\" = { type = \"float\", low = \"a\", high = 1 }\n");
    assert_eq!((e.key.as_deref(), e.location.map(|l| l.0)), (Some("tune.params.\"optimizer.lr\".low"), Some(4)), "{e}");
    let e = err("[tune.params]\n\"optimizer.lr\" = { type = \"float\", low = 0.1, high = 1, choices = [1] }\n");
    assert!(e.message.contains("type = \"categorical\""), "{e}");
    let e = err("[tune.params]\n\"optimizer.lr\" = 0.1\n");
    assert_eq!((e.key.as_deref(), e.location.map(|l| l.0)), (Some("tune.params.\"optimizer.lr\""), Some(4)), "{e}");
    let e = err("[tune.params]\n\"optimizer.lr\" = { low = 0.1, high = 1 }\n");
    assert!(e.message.contains("missing field `type`"), "{e}");
    let c = parse_str("[tune.pruner]\ntype = \"hyperband\"\nmin_resource = 2\n[tune.params]\nb = { type = \"int\", low = 1, high = 4 }\na = { type = \"categorical\", choices = [\"x\"] }\n").unwrap();
    let t = c.tune.unwrap();
    assert_eq!(serde_json::to_value(&t.pruner).unwrap(), serde_json::json!({ "type": "hyperband", "min_resource": 2 }));
    assert_eq!(t.params.keys().collect::<Vec<_>>(), ["b", "a"]);
    assert_eq!(serde_json::to_value(&t.params["b"]).unwrap(), serde_json::json!({ "type": "int", "low": 1, "high": 4, "log": false }));
}

#[test]
fn the_resolved_config_holds_only_the_keys_that_apply_and_reads_back() {
    let cases = [
        ("", ["classes", "noise", "features_key", "momentum", "gamma"]),
        (
            "[data]\nsource = \"csv\"\npath = \"a.csv\"\ntarget = \"y\"\n[optimizer]\nname = \"sgd\"\n[scheduler]\nname = \"plateau\"\n",
            ["classes", "noise", "features_key", "betas", "gamma"],
        ),
    ];
    for (section, absents) in cases {
        let c = parse_str(section).unwrap();
        let text = to_toml(&c);
        assert_eq!(parse(&text, Path::new("config.toml"), &[]).unwrap(), c, "{text}");
        assert_eq!(parse_resolved(&text).unwrap(), c);
        for absent in absents {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
    }
}

#[test]
fn run_directories_of_flat_configs_still_load() {
    // What bz wrote into runs/<name>/config.toml before sections were typed.
    let old = "[data]\nsource = \"digits\"\nval_split = 0.2\nnormalize = true\ntask = \"classification\"\nheader = true\ndelimiter = \",\"\n\
        features_key = \"x\"\ntargets_key = \"y\"\nsamples = 2000\nnum_features = 20\nclasses = 3\nnoise = 1.0\n\
        [optimizer]\nname = \"adamw\"\nlr = 0.003\nmomentum = 0.0\ndampening = 0.0\nnesterov = false\nbetas = [0.9, 0.999]\neps = 1e-8\nalpha = 0.99\ncentered = false\n\
        [scheduler]\nname = \"cosine\"\nwarmup_steps = 0\nwarmup_epochs = 1.0\nstep_size = 10\ngamma = 0.1\nmin_lr = 0.0\npct_start = 0.3\n\
        div_factor = 25.0\nfinal_div_factor = 10000.0\nmonitor = \"val/loss\"\nfactor = 0.1\npatience = 10\nthreshold = 0.0001\n\
        [model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 10 }]\n";
    let c = parse_resolved(old).unwrap();
    assert_eq!(c.data, DataConfig { normalize: true, ..DataConfig::default() });
    assert_eq!(c.optimizer.name(), "adamw");
    assert_eq!(c.scheduler.warmup_epochs, 1.0);
    assert_eq!(c.scheduler.kind, SchedulerKind::Cosine(CosineOptions { min_lr: 0.0 }));
}

/// The tag names the resolver accepts are the ones serde writes back, for every variant.
#[test]
fn every_kind_round_trips_its_tag() {
    fn check<T: tagged::Tagged + Serialize>(required: &str) {
        for kind in T::KINDS {
            let mut table: toml::Table = toml::from_str(required).unwrap();
            table.insert(T::TAG.into(), toml::Value::String(kind.to_string()));
            table.retain(|k, _| k == T::TAG || T::common_fields().contains(&k) || T::variant_fields(kind).contains(&k));
            let typed: T = tagged::resolve(&table).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(serde_json::to_value(&typed).unwrap()[T::TAG], *kind);
        }
    }
    check::<DataConfig>("path = \"p\"\ntarget = 0\n");
    check::<OptimizerConfig>("");
    check::<SchedulerConfig>("");
    check::<PrunerConfig>("percentile = 50.0\n");
    check::<ParamSpec>("low = 1\nhigh = 2\nchoices = [1]\n");
}
