//! Data-parallel collectives on PyTorch's own distributed engine: c10d's TCPStore and ProcessGroupGloo, reached
//! through the small C shim in `shim.cpp` (tch has no bindings for c10d). Ranks find each other by torchrun's env://
//! contract, so torchrun, SLURM or Kubernetes launch bz as they launch PyTorch.
//!
//! The shim is compiled only when gloo's headers were present at build time (`scripts/setup --dist`); without it
//! every entry point here says so in one error, and [`available`] is false.
use std::time::Duration;
use tch::Tensor;

#[cfg(bz_dist)]
mod ffi;
pub mod launch;

/// How long a rank waits for the others, at start-up and in each collective, unless told otherwise. PyTorch's
/// default is 30 minutes; a dead rank should stop a run sooner than that.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The variables torchrun sets for each rank (env:// rendezvous).
const ENV_HINT: &str = "torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for each rank";

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("environment variable {name}: {problem} ({ENV_HINT})")]
    Env { name: &'static str, problem: String },
    #[error(
        "this bz was built without distributed training: gloo's headers were missing at build time \
         (run scripts/setup --dist, touch bz-host/build.rs and rebuild)"
    )]
    NotBuilt,
    #[error("{op}: {message}")]
    C10d { op: &'static str, message: String },
}

/// Whether this build carries the c10d bridge, for `bz doctor`.
pub fn available() -> bool {
    cfg!(bz_dist)
}

/// Where this process sits in the job and where rank 0's store listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub rank: u32,
    pub world_size: u32,
    pub local_rank: u32,
    pub master_addr: String,
    pub master_port: u16,
    /// GLOO_SOCKET_IFNAME: the network interface Gloo binds to, as in PyTorch.
    pub socket_ifname: Option<String>,
    /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT,
    /// so every rank joins it rather than rank 0 serving one.
    pub agent_store: bool,
}

impl Rendezvous {
    /// Reads torchrun's variables from this process's environment.
    pub fn from_env() -> Result<Self, DistError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, DistError> {
        let var = |name: &'static str| -> Result<String, DistError> {
            match lookup(name) {
                Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
                Some(_) => Err(DistError::Env { name, problem: "is empty".into() }),
                None => Err(DistError::Env { name, problem: "is not set".into() }),
            }
        };
        let number = |name: &'static str| -> Result<u32, DistError> {
            let value = var(name)?;
            value.parse().map_err(|_| DistError::Env { name, problem: format!("`{value}` is not a whole number ≥ 0") })
        };
        let world_size = number("WORLD_SIZE")?;
        if world_size == 0 {
            return Err(DistError::Env { name: "WORLD_SIZE", problem: "is 0; a job has at least one rank".into() });
        }
        let rank = number("RANK")?;
        if rank >= world_size {
            return Err(DistError::Env { name: "RANK", problem: format!("{rank} is not below WORLD_SIZE={world_size} (ranks count from 0)") });
        }
        let local_rank = number("LOCAL_RANK")?;
        let master_addr = var("MASTER_ADDR")?;
        let port = var("MASTER_PORT")?;
        let master_port = port
            .parse()
            .ok()
            .filter(|&p: &u16| p != 0)
            .ok_or_else(|| DistError::Env { name: "MASTER_PORT", problem: format!("`{port}` is not a port number (1-65535)") })?;
        let socket_ifname = lookup("GLOO_SOCKET_IFNAME").filter(|s| !s.trim().is_empty());
        let agent_store = lookup("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
        Ok(Rendezvous { rank, world_size, local_rank, master_addr, master_port, socket_ifname, agent_store })
    }

    /// Whether this rank serves the store the others join.
    pub fn serves_store(&self) -> bool {
        self.rank == 0 && !self.agent_store
    }
}

/// A batch norm's tensors and constants, as `torch.nn.functional.batch_norm` takes them.
pub struct BatchNormParams<'a> {
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub running_mean: Option<&'a Tensor>,
    pub running_var: Option<&'a Tensor>,
    pub eps: f64,
    pub momentum: f64,
}

/// A Gloo process group over all ranks of the job. Collectives must be called in the same order on every rank;
/// each waits at most the group's timeout and then fails instead of hanging.
pub struct ProcessGroup {
    #[cfg(bz_dist)]
    raw: ffi::Group,
    rendezvous: Rendezvous,
}

impl ProcessGroup {
    /// Joins the job torchrun describes in the environment, waiting [`DEFAULT_TIMEOUT`] for the other ranks.
    pub fn from_env() -> Result<Self, DistError> {
        Self::connect(Rendezvous::from_env()?, DEFAULT_TIMEOUT)
    }

    /// Joins the store (rank 0 serves it unless torchrun's agent does) and connects Gloo's mesh, waiting at most
    /// `timeout` for every rank.
    pub fn connect(rendezvous: Rendezvous, timeout: Duration) -> Result<Self, DistError> {
        #[cfg(bz_dist)]
        {
            let raw = ffi::Group::connect(&rendezvous, timeout)?;
            Ok(ProcessGroup { raw, rendezvous })
        }
        #[cfg(not(bz_dist))]
        {
            let _ = (rendezvous, timeout);
            Err(DistError::NotBuilt)
        }
    }

    pub fn rank(&self) -> u32 {
        self.rendezvous.rank
    }

    pub fn world_size(&self) -> u32 {
        self.rendezvous.world_size
    }

    pub fn local_rank(&self) -> u32 {
        self.rendezvous.local_rank
    }

    /// Overwrites `tensor` on every rank with rank `root`'s.
    pub fn broadcast(&mut self, tensor: &mut Tensor, root: u32) -> Result<(), DistError> {
        if root >= self.world_size() {
            let message = format!("root rank {root} is not below the world size {}", self.world_size());
            return Err(DistError::C10d { op: "broadcast", message });
        }
        #[cfg(bz_dist)]
        return self.raw.broadcast(tensor, root);
        #[cfg(not(bz_dist))]
        {
            let _ = tensor;
            Err(DistError::NotBuilt)
        }
    }

    /// Replaces each tensor, in place, by its sum over all ranks (each tensor on its own: they may differ in shape
    /// and kind). One collective per tensor, all in flight together; many small tensors cost more than one flat
    /// buffer of the same size (2 ranks on one machine: 100 × 10k floats ~20 ms, 1 × 1M floats ~5 ms), so gradients
    /// are best summed in flattened buckets.
    pub fn all_reduce_sum(&mut self, tensors: &mut [Tensor]) -> Result<(), DistError> {
        #[cfg(bz_dist)]
        return self.raw.all_reduce_sum(tensors);
        #[cfg(not(bz_dist))]
        {
            let _ = tensors;
            Err(DistError::NotBuilt)
        }
    }

    /// Another handle on this group (the same ranks and collective order), for a model's synchronised batch norms.
    pub fn share(&self) -> Result<ProcessGroup, DistError> {
        #[cfg(bz_dist)]
        return Ok(ProcessGroup { raw: self.raw.share()?, rendezvous: self.rendezvous.clone() });
        #[cfg(not(bz_dist))]
        Err(DistError::NotBuilt)
    }

    /// A training-mode batch norm of `x` (`[batch, channels, …]`) over the whole job's batch: PyTorch's
    /// SyncBatchNorm, forward and backward (see shim.cpp), updating the running statistics in place with the job's.
    /// Every rank must call it in the same order as its other collectives, and so runs its backward.
    pub fn sync_batch_norm(&self, x: &Tensor, norm: &BatchNormParams) -> Result<Tensor, DistError> {
        #[cfg(bz_dist)]
        return self.raw.sync_batch_norm(x, norm);
        #[cfg(not(bz_dist))]
        {
            let _ = (x, norm);
            Err(DistError::NotBuilt)
        }
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&mut self) -> Result<(), DistError> {
        #[cfg(bz_dist)]
        return self.raw.barrier();
        #[cfg(not(bz_dist))]
        Err(DistError::NotBuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const GOOD: [(&str, &str); 5] = [("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")];

    fn read(vars: &HashMap<&str, &str>) -> Result<Rendezvous, DistError> {
        Rendezvous::from_lookup(|name| vars.get(name).map(|v| v.to_string()))
    }

    /// The error for GOOD with `name` set to `value`, or unset.
    fn message(name: &'static str, value: Option<&'static str>) -> String {
        let mut vars: HashMap<&str, &str> = GOOD.into_iter().collect();
        match value {
            Some(value) => vars.insert(name, value),
            None => vars.remove(name),
        };
        read(&vars).unwrap_err().to_string()
    }

    #[test]
    fn reads_the_torchrun_contract() {
        let r = read(&GOOD.into_iter().collect()).unwrap();
        assert_eq!((r.rank, r.world_size, r.local_rank, r.master_port), (1, 2, 1, 29500));
        assert_eq!(r.master_addr, "127.0.0.1");
        assert_eq!(r.socket_ifname, None);
        assert!(!r.serves_store() && !r.agent_store);
    }

    #[test]
    fn a_missing_or_bad_variable_is_one_error_naming_it() {
        assert_eq!(
            message("RANK", None),
            "environment variable RANK: is not set (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and \
             MASTER_PORT for each rank)"
        );
        assert!(message("RANK", Some("2")).starts_with("environment variable RANK: 2 is not below WORLD_SIZE=2"));
        assert!(message("WORLD_SIZE", Some("0")).starts_with("environment variable WORLD_SIZE: is 0"));
        assert!(message("LOCAL_RANK", Some("-1")).starts_with("environment variable LOCAL_RANK: `-1` is not a whole"));
        assert!(message("MASTER_ADDR", Some(" ")).starts_with("environment variable MASTER_ADDR: is empty"));
        assert!(message("MASTER_PORT", Some("70000")).starts_with("environment variable MASTER_PORT: `70000` is not a port"));
        assert!(message("MASTER_PORT", Some("0")).contains("is not a port"));
    }
}
