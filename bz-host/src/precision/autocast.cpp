// The autocast switch for bz (src/precision/autocast.rs): tch's own `autocast` only toggles CUDA and returns early
// without CUDA, so CPU bf16/fp16 autocast needs libtorch's per-device calls. Plain C ABI; no exception crosses it.
#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <cstdio>
#include <exception>

extern "C" {

// What `bz_autocast_enter` replaced, for `bz_autocast_exit` to put back.
struct bz_autocast_prev {
  int enabled;
  int dtype;
};

static void write_error(char* err, size_t len, const char* what) {
  if (err != nullptr && len > 0) {
    std::snprintf(err, len, "%s", what);
  }
}

// Turns autocast on for `device_type` (c10::DeviceType) with `dtype` (c10::ScalarType); 0 on success, else -1 and
// the message in `err`.
int bz_autocast_enter(int device_type, int dtype, bz_autocast_prev* prev, char* err, size_t err_len) {
  try {
    auto device = static_cast<c10::DeviceType>(device_type);
    prev->enabled = at::autocast::is_autocast_enabled(device) ? 1 : 0;
    prev->dtype = static_cast<int>(at::autocast::get_autocast_dtype(device));
    at::autocast::set_autocast_dtype(device, static_cast<c10::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(device, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (const std::exception& e) {
    write_error(err, err_len, e.what());
  } catch (...) {
    write_error(err, err_len, "unknown C++ exception in bz_autocast_enter");
  }
  return -1;
}

// Restores the state `bz_autocast_enter` saved; the outermost exit drops autocast's cache of cast weights, as
// torch.autocast's __exit__ does.
int bz_autocast_exit(int device_type, const bz_autocast_prev* prev, char* err, size_t err_len) {
  try {
    auto device = static_cast<c10::DeviceType>(device_type);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(device, prev->enabled != 0);
    at::autocast::set_autocast_dtype(device, static_cast<c10::ScalarType>(prev->dtype));
    return 0;
  } catch (const std::exception& e) {
    write_error(err, err_len, e.what());
  } catch (...) {
    write_error(err, err_len, "unknown C++ exception in bz_autocast_exit");
  }
  return -1;
}

// Whether autocast is on for `device_type`: 1, 0, or -1 on error.
int bz_autocast_is_enabled(int device_type) {
  try {
    return at::autocast::is_autocast_enabled(static_cast<c10::DeviceType>(device_type)) ? 1 : 0;
  } catch (...) {
    return -1;
  }
}
}
