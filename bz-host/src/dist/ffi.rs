//! The shim's C functions and the one owner of its handle. Every function reports failure as a status and a
//! malloc'd message; nothing unwinds across the boundary.
use super::{DistError, Rendezvous};
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;
use tch::Tensor;

/// The shim's `struct Group` (a TCPStore and a ProcessGroupGloo), opaque here.
#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

/// Mirrors `struct bz_dist_config` in shim.cpp.
#[repr(C)]
struct Config {
    master_addr: *const c_char,
    master_port: u16,
    is_master: i32,
    rank: i32,
    world_size: i32,
    timeout_ms: i64,
    ifname: *const c_char,
}

/// Mirrors `struct bz_sync_batch_norm` in shim.cpp.
#[repr(C)]
struct SyncBatchNormArgs {
    input: *mut c_void,
    weight: *mut c_void,
    bias: *mut c_void,
    running_mean: *mut c_void,
    running_var: *mut c_void,
    eps: f64,
    momentum: f64,
}

extern "C" {
    fn bz_dist_error_free(err: *mut c_char);
    fn bz_dist_share(group: *mut RawGroup, err: *mut *mut c_char) -> *mut RawGroup;
    fn bz_dist_sync_batch_norm(group: *mut RawGroup, args: *const SyncBatchNormArgs, out: *mut *mut c_void, err: *mut *mut c_char) -> i32;
    fn bz_dist_new(config: *const Config, err: *mut *mut c_char) -> *mut RawGroup;
    fn bz_dist_free(group: *mut RawGroup);
    fn bz_dist_broadcast(group: *mut RawGroup, tensor: *mut c_void, root: i32, err: *mut *mut c_char) -> i32;
    fn bz_dist_all_reduce_sum(group: *mut RawGroup, tensors: *mut *mut c_void, count: usize, err: *mut *mut c_char) -> i32;
    fn bz_dist_barrier(group: *mut RawGroup, err: *mut *mut c_char) -> i32;
}

/// Takes ownership of a message the shim allocated.
fn take_error(op: &'static str, err: *mut c_char) -> DistError {
    let message = if err.is_null() {
        "failed without a message".to_owned()
    } else {
        // SAFETY: the shim sets err to a NUL-terminated strdup'd string and hands it over; it is freed once, here.
        let text = unsafe { CStr::from_ptr(err) }.to_string_lossy().trim_end().to_owned();
        unsafe { bz_dist_error_free(err) };
        text
    };
    DistError::C10d { op, message }
}

fn c_string(name: &'static str, value: &str) -> Result<CString, DistError> {
    CString::new(value).map_err(|_| DistError::Env { name, problem: "contains a NUL byte".into() })
}

pub(super) struct Group(NonNull<RawGroup>);

// SAFETY: the handle has no thread affinity; &mut self on every collective keeps calls from racing.
unsafe impl Send for Group {}

impl Group {
    pub(super) fn connect(rendezvous: &Rendezvous, timeout: Duration) -> Result<Self, DistError> {
        let master_addr = c_string("MASTER_ADDR", &rendezvous.master_addr)?;
        let ifname = rendezvous.socket_ifname.as_deref().map(|s| c_string("GLOO_SOCKET_IFNAME", s)).transpose()?;
        let config = Config {
            master_addr: master_addr.as_ptr(),
            master_port: rendezvous.master_port,
            is_master: i32::from(rendezvous.serves_store()),
            rank: i32::try_from(rendezvous.rank).map_err(|_| too_big("RANK"))?,
            world_size: i32::try_from(rendezvous.world_size).map_err(|_| too_big("WORLD_SIZE"))?,
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1),
            ifname: ifname.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
        };
        let mut err = std::ptr::null_mut();
        // SAFETY: config and the strings it points to outlive the call; the shim copies what it keeps.
        let raw = unsafe { bz_dist_new(&config, &mut err) };
        NonNull::new(raw).map(Group).ok_or_else(|| take_error("joining the process group", err))
    }

    pub(super) fn broadcast(&mut self, tensor: &mut Tensor, root: u32) -> Result<(), DistError> {
        let root = i32::try_from(root).map_err(|_| too_big("root rank"))?;
        let mut err = std::ptr::null_mut();
        // SAFETY: the group is live and the tensor pointer is a valid torch::Tensor* for the call's duration.
        let status = unsafe { bz_dist_broadcast(self.0.as_ptr(), tensor.as_mut_ptr().cast(), root, &mut err) };
        check(status, "broadcast", err)
    }

    pub(super) fn all_reduce_sum(&mut self, tensors: &mut [Tensor]) -> Result<(), DistError> {
        let mut raw: Vec<*mut c_void> = tensors.iter_mut().map(|t| t.as_mut_ptr().cast()).collect();
        let mut err = std::ptr::null_mut();
        // SAFETY: as in broadcast; `raw` holds tensors.len() valid pointers borrowed for the call.
        let status = unsafe { bz_dist_all_reduce_sum(self.0.as_ptr(), raw.as_mut_ptr(), raw.len(), &mut err) };
        check(status, "all-reduce", err)
    }

    /// Another handle on the same process group.
    pub(super) fn share(&self) -> Result<Self, DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: the group is live; the shim returns a new handle of its own.
        let raw = unsafe { bz_dist_share(self.0.as_ptr(), &mut err) };
        NonNull::new(raw).map(Group).ok_or_else(|| take_error("sharing the process group", err))
    }

    pub(super) fn sync_batch_norm(&self, x: &Tensor, norm: &super::BatchNormParams) -> Result<Tensor, DistError> {
        let ptr = |t: Option<&Tensor>| t.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut c_void);
        let args = SyncBatchNormArgs {
            input: ptr(Some(x)),
            weight: ptr(norm.weight),
            bias: ptr(norm.bias),
            running_mean: ptr(norm.running_mean),
            running_var: ptr(norm.running_var),
            eps: norm.eps,
            momentum: norm.momentum,
        };
        let (mut out, mut err) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: the group is live and every pointer is a valid torch::Tensor* (or null) for the call; the shim
        // updates the running statistics in place, as torch's batch_norm does through the same kind of pointer.
        let status = unsafe { bz_dist_sync_batch_norm(self.0.as_ptr(), &args, &mut out, &mut err) };
        check(status, "sync batch norm", err)?;
        // SAFETY: on success `out` is a new torch::Tensor* that we own from here, as tch's own results are.
        Ok(unsafe { Tensor::from_ptr(out.cast()) })
    }

    pub(super) fn barrier(&mut self) -> Result<(), DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: the group is live.
        let status = unsafe { bz_dist_barrier(self.0.as_ptr(), &mut err) };
        check(status, "barrier", err)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the handle came from bz_dist_new and is freed once.
        unsafe { bz_dist_free(self.0.as_ptr()) }
    }
}

fn check(status: i32, op: &'static str, err: *mut c_char) -> Result<(), DistError> {
    if status == 0 {
        Ok(())
    } else {
        Err(take_error(op, err))
    }
}

fn too_big(what: &'static str) -> DistError {
    DistError::C10d { op: "joining the process group", message: format!("{what} does not fit a C int") }
}
