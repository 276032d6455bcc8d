//! The "bare tch" side of `scripts/bench-train`: the same training loop bz runs, written directly against tch
//! with its own idioms (tch::nn layers, libtorch's C++ SGD, one randperm + index_select per epoch, narrow()
//! slices per step) and nothing else around it, so the gap to `bz train` is bz's own overhead.
//!
//!   bench_bare_tch --model mlp|cnn --batch 64 --threads 2 --warmup 60 --epochs 1 --steps-per-epoch 660 \
//!                  [--data /usr/share/datasets/fashion-mnist]
//!
//! Prints one JSON line (same fields as scripts/bench/pytorch_eager.py).
use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;
use std::time::Instant;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

struct Args {
    model: String,
    batch: i64,
    threads: i32,
    warmup: i64,
    epochs: i64,
    steps_per_epoch: i64,
    data: String,
}

fn parse_args() -> Result<Args> {
    let mut a =
        Args { model: "mlp".into(), batch: 64, threads: 2, warmup: 60, epochs: 1, steps_per_epoch: 660, data: "/usr/share/datasets/fashion-mnist".into() };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [key, val] = pair else { bail!("option {} needs a value", pair[0]) };
        match key.as_str() {
            "--model" => a.model = val.clone(),
            "--batch" => a.batch = val.parse()?,
            "--threads" => a.threads = val.parse()?,
            "--warmup" => a.warmup = val.parse()?,
            "--epochs" => a.epochs = val.parse()?,
            "--steps-per-epoch" => a.steps_per_epoch = val.parse()?,
            "--data" => a.data = val.clone(),
            _ => bail!("unknown option {key}"),
        }
    }
    Ok(a)
}

/// Reads an IDX file (gzipped or not) into a u8 tensor shaped by its header.
fn read_idx(path: &Path) -> Result<Tensor> {
    let gz = path.with_extension(match path.extension() {
        Some(e) => format!("{}.gz", e.to_string_lossy()),
        None => "gz".into(),
    });
    let mut bytes = Vec::new();
    if gz.exists() {
        GzDecoder::new(std::fs::File::open(&gz)?).read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?.read_to_end(&mut bytes)?;
    }
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        bail!("{}: not a u8 IDX file", path.display());
    }
    let ndim = bytes[3] as usize;
    let dims: Vec<i64> = (0..ndim).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as i64).collect();
    let body = &bytes[4 + 4 * ndim..];
    if body.len() as i64 != dims.iter().product::<i64>() {
        bail!("{}: size does not match header {dims:?}", path.display());
    }
    Ok(Tensor::from_slice(body).view(dims.as_slice()))
}

/// Images as float [N,1,28,28] in [0,1] (no normalisation), labels as int64.
fn load(dir: &Path, prefix: &str) -> Result<(Tensor, Tensor)> {
    let images = read_idx(&dir.join(format!("{prefix}-images-idx3-ubyte")))?;
    let labels = read_idx(&dir.join(format!("{prefix}-labels-idx1-ubyte")))?;
    let n = images.size()[0];
    Ok((images.to_kind(Kind::Float).g_div_scalar(255.0).view([n, 1, 28, 28]), labels.to_kind(Kind::Int64)))
}

fn model(vs: &nn::Path, name: &str) -> Result<nn::Sequential> {
    Ok(match name {
        "mlp" => nn::seq()
            .add_fn(|x| x.flat_view())
            .add(nn::linear(vs / "l1", 784, 256, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(vs / "l2", 256, 128, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(vs / "l3", 128, 10, Default::default())),
        "cnn" => {
            let conv = nn::ConvConfig { padding: 1, ..Default::default() };
            nn::seq()
                .add(nn::conv2d(vs / "c1", 1, 32, 3, conv))
                .add_fn(|x| x.relu().max_pool2d_default(2))
                .add(nn::conv2d(vs / "c2", 32, 64, 3, conv))
                .add_fn(|x| x.relu().max_pool2d_default(2).flat_view())
                .add(nn::linear(vs / "l1", 3136, 128, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::linear(vs / "l2", 128, 10, Default::default()))
        }
        other => bail!("unknown model {other} (mlp|cnn)"),
    })
}

fn main() -> Result<()> {
    let a = parse_args()?;
    // Threads before the first op: libtorch sizes its OpenMP pool once.
    tch::set_num_threads(a.threads);
    tch::manual_seed(0);
    let dir = Path::new(&a.data);
    let (train_x, train_y) = load(dir, "train")?;
    // bz also holds the validation set; keep it resident so peak RSS compares like with like.
    let _val = load(dir, "t10k")?;
    let n = train_x.size()[0];
    if a.steps_per_epoch * a.batch > n {
        bail!("{} steps of {} exceed the {n} training samples", a.steps_per_epoch, a.batch);
    }

    let vs = nn::VarStore::new(Device::Cpu);
    let net = model(&vs.root(), &a.model)?;
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.01)?;

    let total = a.epochs * a.steps_per_epoch;
    if a.warmup >= total {
        bail!("warm-up ({}) must be shorter than the run ({total} steps)", a.warmup);
    }
    let mut step = 0;
    let mut start = None;
    let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for _ in 0..a.epochs {
        let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        let (xs, ys) = (train_x.index_select(0, &perm), train_y.index_select(0, &perm));
        for i in 0..a.steps_per_epoch {
            if step == a.warmup {
                start = Some(Instant::now());
            }
            let x = xs.narrow(0, i * a.batch, a.batch);
            let y = ys.narrow(0, i * a.batch, a.batch);
            loss = net.forward(&x).cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
            step += 1;
        }
    }
    let seconds = start.expect("warm-up < total").elapsed().as_secs_f64();
    let steps = total - a.warmup;
    println!(
        "{}",
        serde_json::json!({
            "side": "bare_tch",
            "model": a.model,
            "batch": a.batch,
            "threads": tch::get_num_threads(),
            "warmup_steps": a.warmup,
            "steps": steps,
            "seconds": seconds,
            "samples_per_s": (steps * a.batch) as f64 / seconds,
            "final_loss": f64::try_from(&loss)?,
            "optimizer": "tch nn::Sgd (libtorch C++ torch::optim::SGD)",
        })
    );
    Ok(())
}
