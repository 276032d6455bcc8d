//! The checks serde cannot make: ranges and combinations of values, tagged sections first, plugin names.

use super::*;

/// Types the sections whose keys depend on a tag before the whole config, so that their errors keep the key path
/// (see `tagged`). Returns the offending key and why.
pub(super) fn check_tagged(root: &toml::Table) -> Result<(), (String, String)> {
    fn section<T: tagged::Tagged>(table: Option<&toml::Value>, at: &str) -> Result<(), (String, String)> {
        match table.and_then(toml::Value::as_table).map(tagged::resolve::<T>) {
            Some(Err(e)) => Err((if e.path.is_empty() { at.to_string() } else { format!("{at}.{}", e.path) }, e.message)),
            _ => Ok(()),
        }
    }
    section::<DataConfig>(root.get("data"), "data")?;
    section::<OptimizerConfig>(root.get("optimizer"), "optimizer")?;
    section::<SchedulerConfig>(root.get("scheduler"), "scheduler")?;
    let tune = root.get("tune").and_then(toml::Value::as_table);
    section::<PrunerConfig>(tune.and_then(|t| t.get("pruner")), "tune.pruner")?;
    tune.map(tune::check_raw).transpose()?;
    for (name, spec) in tune.and_then(|t| t.get("params")).and_then(toml::Value::as_table).into_iter().flatten() {
        let at = format!("tune.params.{name:?}");
        if !spec.is_table() {
            return Err((at, "must be a table like { type = \"float\", low = 0.001, high = 0.1 }".into()));
        }
        section::<ParamSpec>(Some(spec), &at)?;
    }
    Ok(())
}

/// Plugin section names and `library` values name files in the plugin directory, so only plain names may: a
/// config from someone else cannot point bz at `../x` or `/tmp/evil.so`. Returns the section, the field and why.
pub(super) fn check_plugin_names(c: &Config) -> Result<(), (String, Option<&'static str>, String)> {
    const RULE: &str = "lower-case letters, digits, '-' and '_' only; plugins load by name from the plugin directory, never from a path";
    for (name, section) in &c.plugins {
        if !crate::plugins::loader::is_name(name) {
            return Err((name.clone(), None, format!("{name:?} is not a plugin name ({RULE})")));
        }
        if let Some(lib) = section.get("library").and_then(|v| v.as_str()) {
            if !crate::plugins::loader::is_name(lib) {
                return Err((
                    name.clone(),
                    Some("library"),
                    format!("{lib:?} is not a plugin name ({RULE}); install the library with `bz plugins install` and name it"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the values serde cannot: ranges and combinations. Returns the offending key and why.
pub(super) fn check(c: &Config) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if c.train.epochs == 0 {
        return bad("train.epochs", "must be at least 1".into());
    }
    if c.train.batch_size == 0 {
        return bad("train.batch_size", "must be at least 1".into());
    }
    if c.train.val_batch_size == Some(0) {
        return bad("train.val_batch_size", "must be at least 1".into());
    }
    if c.train.grad_accumulation == 0 {
        return bad("train.grad_accumulation", "must be at least 1 (1 = no accumulation)".into());
    }
    if !(0.0..1.0).contains(&c.train.label_smoothing) {
        return bad("train.label_smoothing", format!("{} is outside [0, 1)", c.train.label_smoothing));
    }
    for (k, v) in [("train.clip_grad_norm", c.train.clip_grad_norm), ("train.clip_grad_value", c.train.clip_grad_value)] {
        if let Some(v) = v {
            if !(v > 0.0 && v.is_finite()) {
                return bad(k, format!("{v} must be a positive number"));
            }
        }
    }
    check_data(&c.data)?;
    check_optimizer(&c.optimizer)?;
    check_scheduler(&c.scheduler)?;
    c.tune.as_ref().map(TuneConfig::check).transpose()?;
    if let Some(PrunerConfig::Percentile(p)) = c.tune.as_ref().map(|t| &t.pruner) {
        if !(0.0..=100.0).contains(&p.percentile) {
            return bad("tune.pruner.percentile", format!("{} is outside [0, 100]", p.percentile));
        }
    }
    if let Some(t) = &c.tune {
        super::tune::check_conditions(&t.params)?;
    }
    if c.model.torchscript.is_some() && !c.model.layers.is_empty() {
        return bad("model.torchscript", "give either `layers` or `torchscript`, not both".into());
    }
    if c.model.torchscript.is_none() && c.model.layers.is_empty() {
        return bad("model", "no model: add `layers = [...]` or `torchscript = \"model.pt\"` (see `bz init`)".into());
    }
    check_layers(&c.model.layers, "model.layers")?;
    // An embedding that reads the data's values as token ids: normalised, they would be fractions around zero.
    let first_computing = c.model.layers.iter().position(|l| !matches!(l, LayerSpec::Reshape { .. } | LayerSpec::Flatten));
    if let Some(i) = first_computing.filter(|i| c.data.normalize && matches!(c.model.layers[*i], LayerSpec::Embedding { .. })) {
        return bad(
            "data.normalize",
            format!("model.layers[{i}] (embedding) reads the features as token ids, which normalising would turn into fractions: set normalize = false"),
        );
    }
    if let Some(Err(message)) = c.run.name.as_deref().map(plain_run_name) {
        return bad("run.name", message);
    }
    match c.run.device.as_str() {
        "auto" | "cpu" | "cuda" => {}
        d if d.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok()) => {}
        d => return bad("run.device", format!("unknown device {d:?}: use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")),
    }
    Ok(())
}

/// A run name is one directory under `run.dir`: never a path that leads out of it, nor a hidden directory.
pub fn plain_run_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("{name:?} must be a plain directory name (no '/', not starting with '.')"));
    }
    Ok(name.to_string())
}

fn check_data(d: &DataConfig) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if !(0.0..1.0).contains(&d.val_split) {
        return bad("data.val_split", format!("{} is outside [0, 1); use `data.val` for a separate validation set", d.val_split));
    }
    match &d.source {
        DataSource::Csv(csv) if csv.delimiter.len() != 1 => bad("data.delimiter", format!("{:?} must be a single one-byte character", csv.delimiter)),
        DataSource::Idx(IdxData { val: Some(v), .. }) if v != "test" => {
            bad("data.val", format!("{v:?}: for idx data use \"test\" (the t10k files) or leave it out and set val_split"))
        }
        DataSource::Idx(IdxData { test: Some(t), .. }) if t != "test" => {
            bad("data.test", format!("{t:?}: for idx data use \"test\" (the t10k files) or leave it out"))
        }
        // One set of files cannot be both the split that picks the best checkpoint and the one that judges it.
        DataSource::Idx(IdxData { val: Some(_), test: Some(_), .. }) => {
            bad("data.test", "the t10k files are already the validation split (data.val = \"test\"); drop data.val and set val_split to validate on a held-out part of the training files".into())
        }
        DataSource::Images(img) => check_images(img),
        _ => Ok(()),
    }
}

fn check_images(img: &ImagesData) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if let Some(c) = img.channels.filter(|c| ![1, 3].contains(c)) {
        return bad("data.channels", format!("{c}: images are read as 1 (grayscale) or 3 (RGB) channels"));
    }
    if let Some(size) = img.size.filter(|s| s.iter().any(|&d| d == 0 || d > 16_384)) {
        return bad("data.size", format!("{size:?}: give [height, width], each 1 to 16384"));
    }
    let Some(a) = &img.augment else { return Ok(()) };
    if let Some([lo, hi]) = a.crop_scale.filter(|[lo, hi]| !(*lo > 0.0 && lo <= hi && *hi <= 1.0)) {
        return bad("data.augment.crop_scale", format!("[{lo}, {hi}]: give the crop's share of the image as [low, high] with 0 < low <= high <= 1"));
    }
    for (key, value, max) in
        [("rotation", a.rotation, 180.0), ("translate", a.translate, 0.5), ("brightness", a.brightness, 0.99), ("contrast", a.contrast, 0.99)]
    {
        if !(0.0..=max).contains(&value) {
            return bad(&format!("data.augment.{key}"), format!("{value} is outside [0, {max}]"));
        }
    }
    Ok(())
}

fn check_optimizer(o: &OptimizerConfig) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if !(o.lr > 0.0 && o.lr.is_finite()) {
        return bad("optimizer.lr", format!("{} must be a positive number", o.lr));
    }
    if o.weight_decay.is_some_and(|w| w < 0.0) {
        return bad("optimizer.weight_decay", "must be >= 0".into());
    }
    let momentum = match &o.kind {
        OptimizerKind::Sgd(s) => s.momentum,
        OptimizerKind::Rmsprop(r) => r.momentum,
        OptimizerKind::Adam(_) | OptimizerKind::Adamw(_) => 0.0,
    };
    if momentum < 0.0 {
        return bad("optimizer.momentum", format!("{momentum} must be >= 0"));
    }
    match &o.kind {
        OptimizerKind::Sgd(s) if s.nesterov && (s.momentum <= 0.0 || s.dampening != 0.0) => {
            bad("optimizer.nesterov", "needs momentum > 0 and dampening = 0 (as in PyTorch)".into())
        }
        OptimizerKind::Adam(a) | OptimizerKind::Adamw(a) if a.betas.iter().any(|b| !(0.0..1.0).contains(b)) => {
            bad("optimizer.betas", format!("{:?}: each beta must be in [0, 1)", a.betas))
        }
        _ => Ok(()),
    }
}

fn check_scheduler(s: &SchedulerConfig) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if s.warmup_steps > 0 && s.warmup_epochs > 0.0 {
        return bad("scheduler.warmup_epochs", "give warmup_steps or warmup_epochs, not both".into());
    }
    match &s.kind {
        SchedulerKind::OneCycle(_) if s.warmup_steps > 0 || s.warmup_epochs > 0.0 => {
            bad("scheduler.name", "one_cycle has its own warm-up (pct_start); remove warmup_steps/warmup_epochs".into())
        }
        SchedulerKind::Step(step) if step.step_size == 0 => bad("scheduler.step_size", "must be at least 1 epoch".into()),
        SchedulerKind::OneCycle(o) if !(o.pct_start > 0.0 && o.pct_start < 1.0) => bad("scheduler.pct_start", format!("{} is outside (0, 1)", o.pct_start)),
        SchedulerKind::Plateau(p) if !(p.factor > 0.0 && p.factor < 1.0) => bad("scheduler.factor", format!("{} is outside (0, 1)", p.factor)),
        _ => Ok(()),
    }
}

fn check_layers(layers: &[LayerSpec], at: &str) -> Result<(), (String, String)> {
    for (i, l) in layers.iter().enumerate() {
        let key = format!("{at}[{i}]");
        let positive = |what: &str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err((key.clone(), format!("{what} = {v} must be positive")))
            }
        };
        match l {
            LayerSpec::Linear { out, .. } => positive("out", *out)?,
            LayerSpec::Conv2d { out, kernel, stride, padding, .. } => {
                positive("out", *out)?;
                positive("kernel", *kernel)?;
                positive("stride", *stride)?;
                if *padding < 0 {
                    return Err((key, "padding must be >= 0".into()));
                }
            }
            LayerSpec::Maxpool2d { kernel, stride } | LayerSpec::Avgpool2d { kernel, stride } => {
                positive("kernel", *kernel)?;
                positive("stride", stride.unwrap_or(*kernel))?;
            }
            LayerSpec::Conv1d { out, kernel, stride, padding, .. } => {
                positive("out", *out)?;
                positive("kernel", *kernel)?;
                positive("stride", *stride)?;
                if *padding < 0 {
                    return Err((key, "padding must be >= 0".into()));
                }
            }
            LayerSpec::Maxpool1d { kernel, stride } | LayerSpec::Avgpool1d { kernel, stride } => {
                positive("kernel", *kernel)?;
                positive("stride", stride.unwrap_or(*kernel))?;
            }
            LayerSpec::Embedding { num, dim, padding_idx } => {
                positive("num", *num)?;
                positive("dim", *dim)?;
                if let Some(p) = padding_idx.filter(|p| !(0..*num).contains(p)) {
                    return Err((key, format!("padding_idx = {p} is outside 0..{num} (the table's rows)")));
                }
            }
            LayerSpec::Lstm { hidden, layers, .. } | LayerSpec::Gru { hidden, layers, .. } => {
                positive("hidden", *hidden)?;
                positive("layers", *layers)?;
            }
            LayerSpec::PositionalEmbedding { max_len } => positive("max_len", *max_len)?,
            LayerSpec::TransformerEncoder { heads, ff, layers, dropout } => {
                positive("heads", *heads)?;
                positive("ff", *ff)?;
                positive("layers", *layers)?;
                if !(0.0..1.0).contains(dropout) {
                    return Err((key, format!("dropout = {dropout} is outside [0, 1)")));
                }
            }
            LayerSpec::Dropout { p } if !(0.0..1.0).contains(p) => return Err((key, format!("p = {p} is outside [0, 1)"))),
            LayerSpec::Residual { layers } => {
                if layers.is_empty() {
                    return Err((key, "a residual block needs at least one layer".into()));
                }
                check_layers(layers, &format!("{key}.layers"))?
            }
            LayerSpec::Reshape { shape } if shape.iter().any(|d| *d <= 0 && *d != -1) => {
                return Err((key, format!("shape {shape:?}: dimensions must be positive (or one -1)")))
            }
            _ => {}
        }
    }
    Ok(())
}
