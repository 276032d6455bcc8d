//! Checkpoints: `checkpoints/step-NNNNNNNN/` directories holding `model.safetensors` (weights and buffers,
//! loadable by PyTorch), `optimizer.safetensors` and `trainer.json`, with `last` and `best` as symlinks.
//!
//! A checkpoint is written into a hidden temporary directory, synced, renamed into place, and only then do the
//! links move (each by an atomic rename of a new link over the old one). A crash at any point leaves `last`
//! pointing at a complete checkpoint.

pub mod inference;

use anyhow::{bail, Context, Result};
use inference::Inference;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const FORMAT_VERSION: u32 = 1;

/// Everything about the training position that is not a tensor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    pub format_version: u32,
    pub bz_version: String,
    /// Epoch in progress (0-based) and the next batch in it; `batch_in_epoch == 0` means the epoch starts fresh.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    /// Batches trained so far.
    pub global_step: usize,
    pub optimizer_steps: i64,
    /// The monitored metric's best value so far, and at which epoch (1-based).
    pub best: Option<f64>,
    pub best_epoch: Option<usize>,
    pub plateau: crate::schedule::PlateauState,
    /// Running sums of a partly done epoch (an interrupted run).
    pub partial: PartialEpoch,
    /// Training seconds before this checkpoint, so throughput and ETA continue after a resume.
    pub elapsed_s: f64,
    /// The last epoch's metrics, for `bz eval` and humans.
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// fp16's loss scaler (`train.precision = "16-mixed"`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<crate::precision::ScalerState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PartialEpoch {
    pub loss_sum: f64,
    pub correct: i64,
    pub samples: i64,
    pub seconds: f64,
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
}

/// Saves a TorchScript module's own file into a checkpoint directory (true when it wrote one).
pub type SaveScript<'a> = &'a dyn Fn(&Path) -> Result<bool>;

/// Writes a checkpoint and points `last` (and `best` when asked) at it; prunes directories no link uses.
pub fn save(
    root: &Path,
    vs: &tch::nn::VarStore,
    optimizer: &[(String, Tensor)],
    state: &TrainerState,
    inference: &Inference,
    script: Option<SaveScript<'_>>,
    is_best: bool,
) -> Result<PathBuf> {
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    // A fresh name even when this step was saved before, so no link ever points at a directory being replaced.
    let mut name = format!("step-{:08}", state.global_step);
    for n in 1.. {
        if !root.join(&name).exists() {
            break;
        }
        name = format!("step-{:08}.{n}", state.global_step);
    }
    let final_dir = root.join(&name);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let write = || -> Result<()> {
        vs.save(tmp.join("model.safetensors")).context("saving model weights")?;
        Tensor::write_safetensors(optimizer, tmp.join("optimizer.safetensors")).context("saving optimizer state")?;
        if let Some(save_script) = script {
            save_script(&tmp.join("model.pt"))?;
        }
        fs::write(tmp.join("trainer.json"), serde_json::to_vec_pretty(state)?)?;
        inference.write(&tmp)?;
        for f in fs::read_dir(&tmp)? {
            fs::File::open(f?.path())?.sync_all()?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e.context(format!("writing checkpoint {}", final_dir.display())));
    }
    fs::rename(&tmp, &final_dir)?;
    crate::atomic::sync_dir(root);
    relink(root, "last", &name)?;
    if is_best {
        relink(root, "best", &name)?;
    }
    crate::atomic::sync_dir(root);
    prune(root)?;
    Ok(final_dir)
}

fn relink(root: &Path, link: &str, target: &str) -> Result<()> {
    let tmp = root.join(format!(".{link}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("cannot create link {}", tmp.display()))?;
    fs::rename(&tmp, root.join(link)).with_context(|| format!("cannot move link {link} in {}", root.display()))?;
    Ok(())
}

/// Removes checkpoint directories that neither `last` nor `best` points to, and stale temporaries.
fn prune(root: &Path) -> Result<()> {
    let keep: Vec<PathBuf> = ["last", "best"].iter().filter_map(|l| fs::read_link(root.join(l)).ok()).collect();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale_tmp = name.starts_with(".tmp-") && !name.ends_with(&format!("-{}", std::process::id()));
        if (name.starts_with("step-") && !keep.iter().any(|k| k.as_os_str() == entry.file_name())) || stale_tmp {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Reads `trainer.json` of a checkpoint directory (or a link to one).
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer.json");
    let text = fs::read(&path).with_context(|| format!("cannot read {}: not a bz checkpoint directory?", path.display()))?;
    let state: TrainerState = serde_json::from_slice(&text).with_context(|| format!("{} is damaged", path.display()))?;
    if state.format_version != FORMAT_VERSION {
        bail!("{} has checkpoint format {}, this bz reads {FORMAT_VERSION}", path.display(), state.format_version);
    }
    Ok(state)
}

/// Loads a checkpoint's weights into `vs`; every variable must be present with the same shape.
pub fn load_model(dir: &Path, vs: &mut tch::nn::VarStore) -> Result<()> {
    let path = dir.join("model.safetensors");
    let tensors = Tensor::read_safetensors(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let saved: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        let src = saved.get(&name).with_context(|| format!("{} has no tensor {name:?}: it was saved from a different model", path.display()))?;
        if src.size() != var.size() {
            bail!("{}: {name:?} has shape {:?}, the model expects {:?}: the model changed since this checkpoint", path.display(), src.size(), var.size());
        }
        var.f_copy_(src)?;
    }
    Ok(())
}

pub fn load_optimizer(dir: &Path) -> Result<Vec<(String, Tensor)>> {
    let path = dir.join("optimizer.safetensors");
    Tensor::read_safetensors(&path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    fn state(step: usize) -> TrainerState {
        TrainerState {
            format_version: FORMAT_VERSION,
            bz_version: "test".into(),
            epoch: 1,
            batch_in_epoch: 0,
            global_step: step,
            optimizer_steps: step as i64,
            best: None,
            best_epoch: None,
            plateau: Default::default(),
            partial: Default::default(),
            elapsed_s: 0.0,
            metrics: Default::default(),
            scaler: None,
        }
    }

    #[test]
    fn save_links_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(2.0));
        let opt = vec![("w/exp_avg".to_string(), Tensor::ones([3], (Kind::Float, Device::Cpu)))];
        let inf = Inference {
            format_version: inference::FORMAT_VERSION,
            task: crate::config::TaskKind::Regression,
            input_shape: vec![3],
            outputs: 1,
            labels: None,
            normalization: None,
        };
        save(&root, &vs, &opt, &state(10), &inf, None, true).unwrap();
        save(&root, &vs, &opt, &state(20), &inf, None, false).unwrap();
        save(&root, &vs, &opt, &state(30), &inf, None, false).unwrap();
        assert_eq!(Inference::read(&root.join("last")).unwrap(), inf);
        assert_eq!(fs::read_link(root.join("last")).unwrap(), PathBuf::from("step-00000030"));
        assert_eq!(fs::read_link(root.join("best")).unwrap(), PathBuf::from("step-00000010"));
        assert!(!root.join("step-00000020").exists(), "unreferenced checkpoints are pruned");
        assert_eq!(read_state(&root.join("last")).unwrap().global_step, 30);

        let mut vs2 = nn::VarStore::new(Device::Cpu);
        let w2 = vs2.root().var("w", &[3], nn::Init::Const(0.0));
        load_model(&root.join("best"), &mut vs2).unwrap();
        assert!(w2.equal(&w));
        let mut vs3 = nn::VarStore::new(Device::Cpu);
        let _ = vs3.root().var("w", &[4], nn::Init::Const(0.0));
        let e = load_model(&root.join("best"), &mut vs3).unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
        assert_eq!(load_optimizer(&root.join("last")).unwrap()[0].0, "w/exp_avg");
    }
}
