//! A safe guard over autocast.cpp: autocast on for one device and dtype while it lives, the previous state back
//! when it drops. libtorch keeps autocast state per thread, so the guard is neither Send nor Sync.

use anyhow::{bail, Result};
use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;
use tch::{Device, Kind};

/// Mirrors `struct bz_autocast_prev` in autocast.cpp.
#[repr(C)]
#[derive(Default)]
struct Prev {
    enabled: c_int,
    dtype: c_int,
}

extern "C" {
    fn bz_autocast_enter(device_type: c_int, dtype: c_int, prev: *mut Prev, err: *mut c_char, err_len: usize) -> c_int;
    fn bz_autocast_exit(device_type: c_int, prev: *const Prev, err: *mut c_char, err_len: usize) -> c_int;
    fn bz_autocast_is_enabled(device_type: c_int) -> c_int;
}

/// c10::DeviceType's values for the devices bz trains on.
const CPU: c_int = 0;
const CUDA: c_int = 1;

fn device_type(device: Device) -> Result<c_int> {
    match device {
        Device::Cpu => Ok(CPU),
        Device::Cuda(_) => Ok(CUDA),
        other => bail!("autocast (train.precision) runs on CPU and CUDA only, not on {other:?}; set train.precision = \"32\""),
    }
}

/// c10::ScalarType's values for the two autocast dtypes.
fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(5),
        Kind::BFloat16 => Ok(15),
        other => bail!("autocast runs in Half or BFloat16, not {other:?}"),
    }
}

/// Autocast on for one device while this lives.
pub struct Autocast {
    device_type: c_int,
    prev: Prev,
    _not_send: PhantomData<*const ()>,
}

impl Autocast {
    /// Turns autocast on for `device` with `kind` (Half or BFloat16).
    pub fn enter(device: Device, kind: Kind) -> Result<Autocast> {
        let (device_type, dtype) = (device_type(device)?, scalar_type(kind)?);
        let mut prev = Prev::default();
        let mut err = [0 as c_char; 512];
        // SAFETY: `prev` and `err` outlive the call; the shim writes at most `err.len()` bytes, NUL-terminated.
        let rc = unsafe { bz_autocast_enter(device_type, dtype, &mut prev, err.as_mut_ptr(), err.len()) };
        if rc != 0 {
            bail!("cannot turn on {kind:?} autocast on {device:?}: {}", message(&err));
        }
        Ok(Autocast { device_type, prev, _not_send: PhantomData })
    }

    /// Whether autocast is on for `device` on this thread.
    pub fn is_enabled(device: Device) -> bool {
        // SAFETY: a plain query; the shim catches every exception.
        device_type(device).is_ok_and(|t| unsafe { bz_autocast_is_enabled(t) } == 1)
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        let mut err = [0 as c_char; 512];
        // SAFETY: as in `enter`; `prev` is what that call saved.
        let rc = unsafe { bz_autocast_exit(self.device_type, &self.prev, err.as_mut_ptr(), err.len()) };
        if rc != 0 {
            // Drop cannot fail; a state libtorch refused to restore is worth a line, not a panic.
            eprintln!("warning: cannot restore the autocast state: {}", message(&err));
        }
    }
}

fn message(err: &[c_char]) -> String {
    // SAFETY: zero-initialised and written by snprintf, so NUL-terminated within the buffer.
    unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module};

    #[test]
    fn a_linear_layer_runs_in_bf16_under_the_guard_and_f32_after() {
        let vs = nn::VarStore::new(Device::Cpu);
        let linear = nn::linear(vs.root(), 4, 3, Default::default());
        let x = tch::Tensor::ones([2, 4], (Kind::Float, Device::Cpu));
        assert!(!Autocast::is_enabled(Device::Cpu));
        {
            let _outer = Autocast::enter(Device::Cpu, Kind::BFloat16).unwrap();
            assert_eq!(linear.forward(&x).kind(), Kind::BFloat16);
            {
                let _inner = Autocast::enter(Device::Cpu, Kind::BFloat16).unwrap();
                assert_eq!(linear.forward(&x).kind(), Kind::BFloat16);
            }
            // The inner guard left the outer one's state in place.
            assert!(Autocast::is_enabled(Device::Cpu));
            assert_eq!(linear.forward(&x).kind(), Kind::BFloat16);
        }
        {
            // The outermost exit dropped the cached bf16 weights, so fp16 autocast casts afresh.
            let _fp16 = Autocast::enter(Device::Cpu, Kind::Half).unwrap();
            assert_eq!(linear.forward(&x).kind(), Kind::Half);
        }
        assert!(!Autocast::is_enabled(Device::Cpu));
        assert_eq!(linear.forward(&x).kind(), Kind::Float);
        assert_eq!(linear.ws.kind(), Kind::Float, "the weights stay f32");
    }

    #[test]
    fn other_dtypes_are_refused() {
        let e = Autocast::enter(Device::Cpu, Kind::Double).err().unwrap();
        assert!(e.to_string().contains("Half or BFloat16"), "{e}");
    }
}
