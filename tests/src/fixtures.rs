//! The configs and data that many test files train: one digits classifier, a CSV problem with a test split, and
//! MNIST-style IDX files, built here instead of pasted into each file.
//!
//! ```
//! use bz_e2e::fixtures::{Digits, MLP_32};
//! let toml = Digits { layers: MLP_32, epochs: 4, batch_size: Some(128), ..Digits::default() }.toml();
//! assert!(toml.contains("source = \"digits\"") && toml.contains("epochs = 4\nbatch_size = 128\n"));
//! ```

/// Flatten and one linear layer: the smallest digits classifier.
pub const LINEAR: &str = r#"[{ type = "flatten" }, { type = "linear", out = 10 }]"#;
/// One hidden layer of 16.
pub const MLP_16: &str = r#"[{ type = "flatten" }, { type = "linear", out = 16 }, { type = "relu" }, { type = "linear", out = 10 }]"#;
/// One hidden layer of 32.
pub const MLP_32: &str = r#"[{ type = "flatten" }, { type = "linear", out = 32 }, { type = "relu" }, { type = "linear", out = 10 }]"#;

/// A digits classifier: `[run]` (when `threads` is set), `[data]`, `[model]`, `[train]`, `[optimizer]` (when `lr` is
/// set), one key per line, so that tests can `.replace("epochs = 4", …)` and append more sections.
#[derive(Debug, Clone, Copy)]
pub struct Digits<'a> {
    pub layers: &'a str,
    pub epochs: u32,
    pub batch_size: Option<u32>,
    pub log_every_n_steps: Option<u32>,
    pub lr: Option<f64>,
    /// `run.threads`; tests run two at a time, and one thread each keeps them from slowing each other down.
    pub threads: Option<u32>,
}

impl Default for Digits<'_> {
    fn default() -> Self {
        Digits { layers: LINEAR, epochs: 3, batch_size: None, log_every_n_steps: None, lr: Some(0.01), threads: Some(1) }
    }
}

impl Digits<'_> {
    pub fn toml(&self) -> String {
        let mut t = String::from("\n");
        if let Some(n) = self.threads {
            t += &format!("[run]\nthreads = {n}\n");
        }
        t += &format!("[data]\nsource = \"digits\"\n[model]\nlayers = {}\n[train]\nepochs = {}\n", self.layers, self.epochs);
        if let Some(n) = self.batch_size {
            t += &format!("batch_size = {n}\n");
        }
        if let Some(n) = self.log_every_n_steps {
            t += &format!("log_every_n_steps = {n}\n");
        }
        if let Some(lr) = self.lr {
            t += &format!("[optimizer]\nlr = {lr}\n");
        }
        t
    }
}

/// Writes a three-class CSV problem with string labels into `dir` (train.csv 240 rows, val.csv and test.csv 60
/// each) and returns the config that trains it with `data.test = "test.csv"`. The features sit far from zero, so
/// normalising any split with statistics other than the training split's would show.
pub fn csv_with_test_split(dir: &std::path::Path) -> String {
    let mut files = [String::from("a,b,species\n"), String::from("a,b,species\n"), String::from("a,b,species\n")];
    for i in 0..360 {
        let (name, cx) = [("setosa", -2.0), ("versicolor", 0.0), ("virginica", 2.0)][i % 3];
        let line = format!("{},{},{name}\n", 100.0 + cx + (i % 7) as f64 * 0.3, -50.0 - cx + (i % 5) as f64 * 0.3);
        files[if i < 240 {
            0
        } else if i < 300 {
            1
        } else {
            2
        }]
        .push_str(&line);
    }
    for (name, text) in ["train.csv", "val.csv", "test.csv"].iter().zip(files) {
        std::fs::write(dir.join(name), text).expect("write a CSV file");
    }
    SpeciesCsv { epochs: 6, lr: 0.01, test: true, one_thread: true }.toml()
}

/// The config of the three-species CSV problem (string labels in column `species`, features `a`, `b`), shared by
/// the CSV, test-split and predict tests: files train.csv and val.csv, and test.csv when `test` is set.
pub struct SpeciesCsv {
    pub epochs: usize,
    pub lr: f64,
    pub test: bool,
    /// One intra-op thread, for runs compared bit for bit.
    pub one_thread: bool,
}

impl SpeciesCsv {
    pub fn toml(&self) -> String {
        let run = if self.one_thread { "[run]\nthreads = 1\n" } else { "" };
        let test = if self.test { "test = \"test.csv\"\n" } else { "" };
        format!(
            "{run}[data]\nsource = \"csv\"\npath = \"train.csv\"\nval = \"val.csv\"\n{test}target = \"species\"\nnormalize = true\n\
             [model]\nlayers = [{{ type = \"linear\", out = 8 }}, {{ type = \"relu\" }}, {{ type = \"linear\", out = 3 }}]\n\
             [train]\nepochs = {}\nbatch_size = 16\n[optimizer]\nlr = {}\n",
            self.epochs, self.lr
        )
    }
}

/// MNIST-style files `PREFIX-images-idx3-ubyte.gz` (gzipped) and `PREFIX-labels-idx1-ubyte` of `n` 8x8 images whose
/// class is the row (0..4) of a bright bar over seeded noise: learnable by a small model. Returns the classes.
pub fn bar_idx_files(dir: &std::path::Path, prefix: &str, n: usize, seed: u32) -> Vec<u8> {
    use std::io::Write;
    let mut images = vec![0u8, 0, 8, 3];
    images.extend((n as u32).to_be_bytes());
    images.extend(8u32.to_be_bytes());
    images.extend(8u32.to_be_bytes());
    let mut labels = vec![0u8, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    let mut s = seed;
    for i in 0..n {
        let class = (i % 4) as u8;
        for r in 0..8u8 {
            for _ in 0..8 {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                images.push(if r / 2 == class { 200 } else { (s >> 24) as u8 / 4 });
            }
        }
        labels.push(class);
    }
    let file = std::fs::File::create(dir.join(format!("{prefix}-images-idx3-ubyte.gz"))).expect("create the images file");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&images).expect("write the images");
    gz.finish().expect("finish the gzip stream");
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), &labels).expect("write the labels");
    labels.split_off(8)
}

/// A digits MLP with dropout and batch norm (so resume must restore the random stream and the buffers), Adam,
/// warm-up and a step schedule: what the resume tests of training.rs and precision.rs continue.
pub const RESUMABLE_MLP: &str = r#"
[run]
seed = 3
threads = 1
[data]
source = "digits"
normalize = true
[model]
layers = [{ type = "flatten" }, { type = "linear", out = 64 }, { type = "relu" }, { type = "dropout", p = 0.2 },
          { type = "batchnorm" }, { type = "linear", out = 10 }]
[train]
epochs = 4
batch_size = 32
log_every_n_steps = 10
[optimizer]
name = "adam"
lr = 0.003
[scheduler]
name = "step"
step_size = 1
gamma = 0.7
warmup_steps = 20
[checkpoint]
monitor = "val/accuracy"
"#;
