// A C ABI over c10d's TCPStore and ProcessGroupGloo, the pieces of PyTorch's distributed engine bz uses for
// data-parallel training on CPU. Rust sees plain C types only: every C++ exception is caught here and comes back as a
// malloc'd message the caller frees with bz_dist_error_free, because an exception unwinding into Rust is undefined
// behaviour. Tensors cross as tch's C_tensor, which is a torch::Tensor* (torch-sys libtch/torch_api.h).
//
// The gloo headers come from horovod's copy (gloo 0.5.0), not the newer gloo libtorch_cpu.so was built with. That is
// sound because nothing here depends on a gloo type's layout: ProcessGroupGloo holds every gloo object behind a
// shared_ptr whose control block and virtual calls live in libtorch_cpu.so, and this file calls no gloo code itself;
// the headers are needed only for ProcessGroupGloo.hpp to parse.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  std::chrono::milliseconds timeout;
};

char* error_copy(const std::string& message) { return strdup(message.c_str()); }

// c10::Error's what() carries a C++ backtrace; the message without it is what a user can act on.
std::string describe(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

// Runs `body`, turning whatever it throws into *err; returns 0 on success and -1 on failure.
template <typename F>
int guarded(char** err, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    *err = error_copy(describe(e));
  } catch (...) {
    *err = error_copy("unknown C++ exception in c10d");
  }
  return -1;
}

// GLOO_SOCKET_IFNAME names the interface as in PyTorch; otherwise a loopback master means a single machine, so
// bind there, and any other master means bind to this host's own name, which is what PyTorch does by default.
std::shared_ptr<gloo::transport::Device> make_device(const char* master_addr, const char* ifname) {
  if (ifname != nullptr && ifname[0] != '\0') {
    try {
      return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
    } catch (const std::exception& e) {
      // Gloo's message ("ifa != nullptr. Unable to find address for: eth9") does not say where the name came from.
      throw std::runtime_error(std::string("GLOO_SOCKET_IFNAME=") + ifname + ": no usable interface of that name (" +
                               describe(e) + ")");
    }
  }
  std::string master = master_addr;
  if (master == "127.0.0.1" || master == "localhost" || master == "::1") {
    return c10d::ProcessGroupGloo::createDeviceForHostname(master);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// Gloo reads a tensor's memory as one dense block from its data pointer, so a view with gaps (a narrowed slice)
// would be reduced wrong, and differently on each rank; such a tensor goes through a contiguous copy.
struct Staged {
  at::Tensor target;
  at::Tensor buffer;

  explicit Staged(const at::Tensor& tensor)
      : target(tensor), buffer(tensor.is_contiguous() ? tensor : tensor.contiguous()) {}

  void finish() {
    if (!buffer.is_same(target)) {
      target.copy_(buffer);
    }
  }
};

// c10d's own messages ("Operation timed out!", "Connection closed by peer") do not say that the cause is usually
// another rank, nor how long was waited; this adds both.
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works, std::chrono::milliseconds timeout) {
  std::string message;
  try {
    for (auto& work : works) {
      if (!work->wait(timeout)) {
        message = "the operation was aborted";
        break;
      }
    }
  } catch (const std::exception& e) {
    message = describe(e);
  }
  if (!message.empty()) {
    throw std::runtime_error(
        "another rank died, stalled or never called it (waited up to " + std::to_string(timeout.count()) +
        " ms): " + message);
  }
}

}  // namespace

extern "C" {

struct bz_dist_config {
  const char* master_addr;
  uint16_t master_port;
  // Serve the store (rank 0), or join one: another rank's or, under torchrun, its agent's.
  int32_t is_master;
  int32_t rank;
  int32_t world_size;
  int64_t timeout_ms;
  // GLOO_SOCKET_IFNAME, or null.
  const char* ifname;
};

void bz_dist_error_free(char* err) { std::free(err); }

// Joins the store and connects the Gloo mesh; both wait at most timeout_ms for the other ranks.
Group* bz_dist_new(const bz_dist_config* config, char** err) {
  Group* out = nullptr;
  guarded(err, [&] {
    std::chrono::milliseconds timeout(config->timeout_ms);
    c10d::TCPStoreOptions store_options;
    store_options.port = config->master_port;
    store_options.isServer = config->is_master != 0;
    store_options.numWorkers = static_cast<std::size_t>(config->world_size);
    // The server waits here until world_size clients have joined, so a rank that never comes fails the start.
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> tcp = c10::make_intrusive<c10d::TCPStore>(config->master_addr, store_options);
    // Our keys apart from whatever else uses the store (torchrun's agent), as init_process_group does.
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>("bz/0/", tcp);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(make_device(config->master_addr, config->ifname));
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, config->rank, config->world_size, options);
    out = new Group{store, gloo, timeout};
  });
  return out;
}

void bz_dist_free(Group* group) {
  // A destructor that throws would abort the process; a failed teardown has nothing left to report to.
  try {
    delete group;
  } catch (...) {
  }
}

int bz_dist_broadcast(Group* group, torch::Tensor* tensor, int32_t root, char** err) {
  return guarded(err, [&] {
    Staged staged(*tensor);
    std::vector<at::Tensor> tensors{staged.buffer};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = group->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works{group->gloo->broadcast(tensors, options)};
    wait_all(works, group->timeout);
    staged.finish();
  });
}

// Sums each tensor across ranks in place. One collective per tensor: c10d reads a vector of tensors as replicas of
// one value, so passing them together would add them to each other.
int bz_dist_all_reduce_sum(Group* group, torch::Tensor** tensors, size_t count, char** err) {
  return guarded(err, [&] {
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = group->timeout;
    std::vector<Staged> staged;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    staged.reserve(count);
    works.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      staged.emplace_back(*tensors[i]);
      std::vector<at::Tensor> one{staged.back().buffer};
      works.push_back(group->gloo->allreduce(one, options));
    }
    wait_all(works, group->timeout);
    for (auto& s : staged) {
      s.finish();
    }
  });
}

int bz_dist_barrier(Group* group, char** err) {
  return guarded(err, [&] {
    c10d::BarrierOptions options;
    options.timeout = group->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works{group->gloo->barrier(options)};
    wait_all(works, group->timeout);
  });
}

}  // extern "C"
