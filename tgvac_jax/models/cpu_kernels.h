// What our XLA:CPU kernels (cpu_attention.cc, cpu_conv.cc) share: 16-float vectors and a parallel loop over
// XLA's intra-op thread pool. Built by tgvac_jax/models/cpu_kernels.py.
#ifndef TGVAC_JAX_MODELS_CPU_KERNELS_H_
#define TGVAC_JAX_MODELS_CPU_KERNELS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace tgvac {

namespace ffi = xla::ffi;

// Vectors of 16 floats through GCC's vector extension: one AVX-512 register, two AVX2 ones, four NEON ones.
constexpr int64_t kLanes = 16;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t Ints __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

// Runs body(i) for i in [0, n) on the calling thread and up to n - 1 pool workers. Items are claimed from a
// shared counter, so a worker that starts late (the pool busy with other ops) finds nothing left and returns; the
// caller waits only for items claimed, never for queued workers.
template <typename Body>
void parallel_for_items(ffi::ThreadPool& pool, int64_t n, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, &body]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      body(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  // A late worker may run after this call returned: it holds the state, and touches body only if it claims an
  // item, which it cannot once next >= n.
  for (int64_t t = 0; t < helpers; ++t) {
    auto copy = work;
    pool.Schedule(std::move(copy));
  }
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

}  // namespace tgvac

#endif  // TGVAC_JAX_MODELS_CPU_KERNELS_H_
