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
#include <torch/csrc/autograd/custom_function.h>

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

// SyncBatchNorm as PyTorch's torch/nn/modules/_functions.py does it: forward gathers every rank's per-channel
// (mean, invstd, count) and normalises with the job's statistics; backward all-reduces (sum dy, sum dy·(x - mean)) so
// the input gradient is the one of the job's batch. PyTorch's kernels for the steps (batch_norm_stats,
// batch_norm_gather_stats_with_counts, batch_norm_elemt, batch_norm_backward_reduce, batch_norm_backward_elemt) exist
// for CUDA only, so each is written out below with the same formula in plain ATen ops, which run on any device.
namespace sync_bn {

// Every dimension but the channels (1): what a batch norm reduces over.
std::vector<int64_t> reduced_dims(const at::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

// A per-channel vector shaped to broadcast over x: [1, C, 1, ...].
at::Tensor per_channel(const at::Tensor& v, const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = x.size(1);
  return v.view(shape);
}

// batch_norm_gather_stats_with_counts: the job's mean and invstd from each rank's, and the running statistics moved
// towards them as BatchNorm does (with the unbiased variance of all count samples).
std::pair<at::Tensor, at::Tensor> gather_stats(const at::Tensor& mean_all, const at::Tensor& invstd_all,
                                               const at::Tensor& counts, at::Tensor& running_mean,
                                               at::Tensor& running_var, double momentum, double eps) {
  auto weights = counts.unsqueeze(1);
  auto n = counts.sum();
  auto mean = (mean_all * weights).sum(0) / n;
  auto var_all = invstd_all.pow(-2) - eps;
  auto var = ((var_all + (mean_all - mean).pow(2)) * weights).sum(0) / n;
  if (running_mean.defined()) {
    running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()) * momentum);
  }
  if (running_var.defined()) {
    auto unbiased = var * n / (n - 1);
    running_var.mul_(1 - momentum).add_(unbiased.to(running_var.scalar_type()) * momentum);
  }
  return {mean, (var + eps).rsqrt()};
}

void wait_one(c10::intrusive_ptr<c10d::Work> work, std::chrono::milliseconds timeout) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works{std::move(work)};
  wait_all(works, timeout);
}

struct Function : public torch::autograd::Function<Function> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor input, at::Tensor weight, at::Tensor bias,
                            at::Tensor running_mean, at::Tensor running_var, double eps, double momentum,
                            c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo, int64_t timeout_ms) {
    std::chrono::milliseconds timeout(timeout_ms);
    input = input.contiguous();
    const int64_t channels = input.size(1);
    at::Tensor combined;
    if (input.numel() > 0) {
      // batch_norm_stats: this rank's mean and 1 / sqrt(biased variance + eps) per channel.
      auto [var, mean] = at::var_mean(input, reduced_dims(input), /*correction=*/0, /*keepdim=*/false);
      auto count = at::full({1}, static_cast<double>(input.numel() / channels), mean.options());
      combined = at::cat({mean, (var + eps).rsqrt(), count});
    } else {
      combined = at::zeros({2 * channels + 1}, input.options());
    }
    // Gathered rather than summed because the counts may differ across ranks.
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < gloo->getSize(); ++r) outputs[0].push_back(at::empty_like(combined));
    std::vector<at::Tensor> inputs{combined};
    c10d::AllgatherOptions options;
    options.timeout = timeout;
    wait_one(gloo->allgather(outputs, inputs, options), timeout);
    auto all = at::stack(outputs[0], 0);
    // A rank with an empty batch sent zeros: its row is left out.
    auto present = all.select(1, 2 * channels) >= 1;
    all = all.index({present});
    auto counts = all.select(1, 2 * channels);
    auto [mean, invstd] = gather_stats(all.narrow(1, 0, channels), all.narrow(1, channels, channels), counts,
                                       running_mean, running_var, momentum, eps);
    ctx->save_for_backward({input, weight, mean, invstd, counts});
    ctx->saved_data["gloo"] = c10::IValue::make_capsule(gloo);
    ctx->saved_data["timeout_ms"] = timeout_ms;
    ctx->saved_data["has_bias"] = bias.defined();
    // batch_norm_elemt.
    auto out = (input - per_channel(mean, input)) * per_channel(invstd, input);
    if (weight.defined()) out = out * per_channel(weight, input);
    if (bias.defined()) out = out + per_channel(bias, input);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto &input = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3], &counts = saved[4];
    auto gloo = c10::static_intrusive_pointer_cast<c10d::ProcessGroupGloo>(ctx->saved_data["gloo"].toCapsule());
    std::chrono::milliseconds timeout(ctx->saved_data["timeout_ms"].toInt());
    auto dy = grads[0].contiguous();
    const int64_t channels = input.size(1);
    // batch_norm_backward_reduce: this rank's sums; grad_weight and grad_bias stay local, averaged with the other
    // gradients as in DDP.
    at::Tensor sum_dy, sum_dy_xmu;
    if (input.numel() > 0) {
      auto dims = reduced_dims(input);
      sum_dy = dy.sum(dims);
      sum_dy_xmu = (dy * (input - per_channel(mean, input))).sum(dims);
    } else {
      sum_dy = at::zeros({channels}, mean.options());
      sum_dy_xmu = at::zeros({channels}, mean.options());
    }
    at::Tensor grad_input, grad_weight, grad_bias;
    if (weight.defined() && ctx->needs_input_grad(1)) grad_weight = sum_dy_xmu * invstd;
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) grad_bias = sum_dy.clone();
    if (ctx->needs_input_grad(0)) {
      std::vector<at::Tensor> combined{at::cat({sum_dy, sum_dy_xmu})};
      c10d::AllreduceOptions options;
      options.reduceOp = c10d::ReduceOp::SUM;
      options.timeout = timeout;
      wait_one(gloo->allreduce(combined, options), timeout);
      if (input.numel() > 0) {
        // batch_norm_backward_elemt, over the job's count of samples.
        auto n = counts.sum();
        auto mean_dy = combined[0].narrow(0, 0, channels) / n;
        auto mean_dy_xmu = combined[0].narrow(0, channels, channels) / n;
        auto xmu = input - per_channel(mean, input);
        auto scale = weight.defined() ? invstd * weight : invstd;
        grad_input = (dy - per_channel(mean_dy, input) - xmu * per_channel(invstd * invstd * mean_dy_xmu, input)) *
                     per_channel(scale, input);
      } else {
        grad_input = at::zeros_like(input);
      }
    }
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(),  at::Tensor(),  at::Tensor()};
  }
};

}  // namespace sync_bn

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

// Another handle on the same process group (a model's synchronised batch norms hold one), freed with bz_dist_free.
Group* bz_dist_share(Group* group, char** err) {
  Group* out = nullptr;
  guarded(err, [&] { out = new Group{group->store, group->gloo, group->timeout}; });
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

struct bz_sync_batch_norm {
  torch::Tensor* input;
  // Each may be null: no affine parameters, no running statistics.
  torch::Tensor* weight;
  torch::Tensor* bias;
  torch::Tensor* running_mean;
  torch::Tensor* running_var;
  double eps;
  double momentum;
};

// A training-mode batch norm over the whole job's batch (SyncBatchNorm); *out receives a new torch::Tensor* that
// the caller owns. Every rank must call it, in the same order as its other collectives; so must backward.
int bz_dist_sync_batch_norm(Group* group, const bz_sync_batch_norm* args, torch::Tensor** out, char** err) {
  return guarded(err, [&] {
    auto or_undefined = [](torch::Tensor* t) { return t == nullptr ? at::Tensor() : *t; };
    at::Tensor running_mean = or_undefined(args->running_mean), running_var = or_undefined(args->running_var);
    if (args->input->dim() < 2) throw std::runtime_error("sync batch norm needs an input of [batch, channels, ...]");
    auto result = sync_bn::Function::apply(*args->input, or_undefined(args->weight), or_undefined(args->bias),
                                           running_mean, running_var, args->eps, args->momentum, group->gloo,
                                           static_cast<int64_t>(group->timeout.count()));
    *out = new torch::Tensor(result);
  });
}

}  // extern "C"
