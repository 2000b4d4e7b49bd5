// Fused float32 attention for XLA:CPU, called through the XLA FFI (tgvac_jax/models/cpu_attention.py builds and
// registers it). (Batch, head) pairs are shared out over XLA's intra-op thread pool; a query row's scores never
// leave the core's cache: scores, softmax and the value product (and in the backward the recomputed
// probabilities, dP and dS) are made a tile of `kRows` rows at a time against the pair's keys and values,
// transposed once to (D, S) so every inner loop runs over keys, contiguous and vectorised.
//
// Layout: q (B, T, H*D), k and v (B, S, H*D), as the UNet's projections come out; lse (B, H, T) is each row's
// log-sum-exp of its scaled scores, kept by the forward for the backward (FlashAttention's recomputation).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_kernels.h"

namespace ffi = xla::ffi;
using tgvac::Ints;
using tgvac::kLanes;
using tgvac::load;
using tgvac::parallel_for_items;
using tgvac::store;
using tgvac::Vec;

// Any rank >= 3: leading dimensions are batch (a vmapped call adds them). Named once: a comma inside the handler
// macros' arguments would split them.
using Array = ffi::Buffer<ffi::F32>;
using Result = ffi::ResultBuffer<ffi::F32>;

namespace {

// Query rows per tile: each key vector loaded is used for this many rows' scores.
constexpr int64_t kRows = 8;

typedef float Half __attribute__((vector_size(kLanes / 2 * sizeof(float))));
typedef float Quarter __attribute__((vector_size(kLanes / 4 * sizeof(float))));

// The sum of v's lanes by halving (a tree of shuffles and adds, not 15 dependent scalar adds: it ends every
// row-times-value dot product, so on a motion module's 16-key rows it is most of the work).
inline float sum(Vec v) {
  const Half h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Quarter q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  return (q[0] + q[2]) + (q[1] + q[3]);
}

// exp(x) for x <= 0 (scores minus their row max or log-sum-exp): x = n ln2 + r with |r| <= ln2/2, exp(r) by its
// Taylor series to r^7 (relative error < 3e-9 before rounding), 2^n through the exponent bits. Below -87 (about
// 2^-126) it gives ~1e-38 instead of 0: nothing next to a row sum >= 1.
inline Vec exp_nonpositive(Vec x) {
  const Vec floor_x = Vec{} - 87.0f;
  x = x < floor_x ? floor_x : x;
  const Vec round = Vec{} + 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const Vec n = (x * 1.44269504088896341f + round) - round;
  const Vec r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  Vec p = Vec{} + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const Ints bits = (__builtin_convertvector(n, Ints) + 127) << 23;
  return p * reinterpret_cast<const Vec&>(bits);
}

// 1 in the lanes of keys [j, j + 16) that are real keys (j < S), 0 in the padding's: a multiply instead of a
// lane-by-lane loop (which compiled to a call to memset on every short row).
inline Vec real_keys(int64_t j, int64_t s) {
  const Ints lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return (lane < static_cast<int32_t>(s - j)) ? Vec{} + 1.0f : Vec{};
}

// This thread's scratch of at least n floats, kept across pairs and calls: a motion module's temporal attention has
// thousands of tiny pairs, and allocating per pair cost as much as their arithmetic.
float* scratch(int64_t n) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

struct Dims {
  int64_t b, t, s, h, d, c;
  int64_t sp;  // keys padded to whole vectors
};

Dims dims(const Array& q, const Array& k, int64_t heads) {
  const auto qd = q.dimensions(), kd = k.dimensions();
  const size_t rank = qd.size();
  int64_t batch = 1;
  for (size_t i = 0; i + 2 < rank; ++i) batch *= qd[i];
  const int64_t s = kd[rank - 2];
  return Dims{batch, qd[rank - 2], s, heads, qd[rank - 1] / heads, qd[rank - 1], (s + kLanes - 1) / kLanes * kLanes};
}

// body(pair) for every (batch, head) pair, in chunks of pairs big enough (~64k multiply-adds) that claiming one costs
// nothing next to its work: a motion module's temporal attention has thousands of pairs of 14 x 14 scores.
template <typename Body>
void parallel_for(ffi::ThreadPool& pool, const Dims& m, const Body& body) {
  const int64_t pairs = m.b * m.h;
  const int64_t chunk = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, m.t * m.sp * m.d));
  parallel_for_items(pool, (pairs + chunk - 1) / chunk, [&](int64_t c) {
    for (int64_t pair = c * chunk; pair < std::min(pairs, (c + 1) * chunk); ++pair) body(pair);
  });
}

// x (B, S, H*D) -> out (D, Sp), zero-padded, for one (batch, head) pair.
void transpose_pair(const float* x, const Dims& m, int64_t bi, int64_t hi, float* out) {
  const float* base = x + bi * m.s * m.c + hi * m.d;
  for (int64_t e = 0; e < m.d; ++e) {
    for (int64_t j = 0; j < m.s; ++j) out[e * m.sp + j] = base[j * m.c + e];
    for (int64_t j = m.s; j < m.sp; ++j) out[e * m.sp + j] = 0.0f;
  }
}

// A tile's rows of x (B, T, H*D) for one pair, times `scale`, into out (kRows, D); rows past T are zero.
void gather_rows(const float* x, const Dims& m, int64_t bi, int64_t hi, int64_t i0, float scale, float* out) {
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t i = i0 + r;
    for (int64_t e = 0; e < m.d; ++e) {
      out[r * m.d + e] = i < m.t ? x[(bi * m.t + i) * m.c + hi * m.d + e] * scale : 0.0f;
    }
  }
}

// out (kRows, Sp) = a (kRows, D) xt (D, Sp).
void project(const float* a, const float* xt, const Dims& m, float* out) {
  for (int64_t j = 0; j < m.sp; j += kLanes) {
    Vec acc[kRows] = {};
    for (int64_t e = 0; e < m.d; ++e) {
      const Vec x = load(xt + e * m.sp + j);
      for (int64_t r = 0; r < kRows; ++r) acc[r] += a[r * m.d + e] * x;
    }
    for (int64_t r = 0; r < kRows; ++r) store(out + r * m.sp + j, acc[r]);
  }
}

// out (kRows, D) = p (kRows, Sp) xt (D, Sp)^T.
void reduce(const float* p, const float* xt, const Dims& m, float* out) {
  for (int64_t e = 0; e < m.d; ++e) {
    Vec acc[kRows] = {};
    for (int64_t j = 0; j < m.sp; j += kLanes) {
      const Vec x = load(xt + e * m.sp + j);
      for (int64_t r = 0; r < kRows; ++r) acc[r] += load(p + r * m.sp + j) * x;
    }
    for (int64_t r = 0; r < kRows; ++r) out[r * m.d + e] = sum(acc[r]);
  }
}

// p = exp(p - shift) over one row's real keys, 0 over the padding; returns the row's sum.
float exp_row(float* p, float shift, const Dims& m) {
  Vec total = {};
  for (int64_t j = 0; j < m.sp; j += kLanes) {
    Vec x = exp_nonpositive(load(p + j) - shift);
    if (j + kLanes > m.s) x *= real_keys(j, m.s);
    store(p + j, x);
    total += x;
  }
  return sum(total);
}

// The max of one row's real keys (the padding's scores are 0, not keys).
float row_max(const float* p, const Dims& m) {
  float top = p[0];
  int64_t j = 0;
  if (m.s >= kLanes) {
    Vec tops = load(p);
    for (j = kLanes; j + kLanes <= m.s; j += kLanes) {
      const Vec x = load(p + j);
      tops = x > tops ? x : tops;
    }
    for (int64_t l = 0; l < kLanes; ++l) top = std::max(top, tops[l]);
  }
  for (; j < m.s; ++j) top = std::max(top, p[j]);
  return top;
}

ffi::Error Forward(ffi::ThreadPool pool, Array q, Array k, Array v, Result out, Result lse, int64_t heads,
                   float scale) {
  const Dims m = dims(q, k, heads);
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  float *op = out->typed_data(), *lp = lse->typed_data();
  parallel_for(pool, m, [&](int64_t pair) {
    const int64_t bi = pair / m.h, hi = pair % m.h;
    float* kt = scratch(2 * m.d * m.sp + kRows * m.sp + 2 * kRows * m.d);
    float *vt = kt + m.d * m.sp, *p = vt + m.d * m.sp, *qs = p + kRows * m.sp, *o = qs + kRows * m.d;
    transpose_pair(kp, m, bi, hi, kt);
    transpose_pair(vp, m, bi, hi, vt);
    for (int64_t i0 = 0; i0 < m.t; i0 += kRows) {
      const int64_t rows = std::min(kRows, m.t - i0);
      gather_rows(qp, m, bi, hi, i0, scale, qs);
      project(qs, kt, m, p);
      float inv[kRows];
      for (int64_t r = 0; r < rows; ++r) {
        float* row = p + r * m.sp;
        const float top = row_max(row, m);
        const float total = exp_row(row, top, m);
        inv[r] = 1.0f / total;
        lp[(bi * m.h + hi) * m.t + i0 + r] = top + std::log(total);
      }
      reduce(p, vt, m, o);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t e = 0; e < m.d; ++e) op[(bi * m.t + i0 + r) * m.c + hi * m.d + e] = o[r * m.d + e] * inv[r];
      }
    }
  });
  return ffi::Error::Success();
}

// One tile's backward in a single pass over the keys, a vector of keys at a time in registers: p = exp(scores -
// lse) (0 for padding keys and rows), dV^T += dO^T p, dP = dO V^T, dS = p (dP - delta), dK^T += q_scaled^T dS.
// dS is stored for dQ = dS K, which sums over keys (`reduce`).
void backward_tile(const float* qs, const float* g, const float* lse, const float* delta, int64_t rows,
                   const float* kt, const float* vt, const Dims& m, float* dkt, float* dvt, float* ds) {
  for (int64_t j = 0; j < m.sp; j += kLanes) {
    Vec p[kRows] = {}, dp[kRows] = {};
    for (int64_t e = 0; e < m.d; ++e) {
      const Vec kx = load(kt + e * m.sp + j), vx = load(vt + e * m.sp + j);
      for (int64_t r = 0; r < kRows; ++r) {
        p[r] += qs[r * m.d + e] * kx;
        dp[r] += g[r * m.d + e] * vx;
      }
    }
    const Vec keep = j + kLanes > m.s ? real_keys(j, m.s) : Vec{} + 1.0f;
#pragma GCC unroll 8
    for (int64_t r = 0; r < kRows; ++r) {
      // Rows past T have lse 0 and zero q and dO: their p is masked here, their dP is already 0.
      p[r] = exp_nonpositive(p[r] - lse[r]) * (r < rows ? keep : Vec{});
      dp[r] = p[r] * (dp[r] - delta[r]);
      store(ds + r * m.sp + j, dp[r]);
    }
    for (int64_t e = 0; e < m.d; ++e) {
      Vec x = load(dvt + e * m.sp + j), y = load(dkt + e * m.sp + j);
      for (int64_t r = 0; r < kRows; ++r) {
        x += g[r * m.d + e] * p[r];
        y += qs[r * m.d + e] * dp[r];
      }
      store(dvt + e * m.sp + j, x);
      store(dkt + e * m.sp + j, y);
    }
  }
}

// FlashAttention's backward: per tile of rows, `backward_tile`, then dQ = scale dS K.
ffi::Error Backward(ffi::ThreadPool pool, Array q, Array k, Array v, Array out, Array lse, Array dout, Result dq,
                    Result dk, Result dv, int64_t heads, float scale) {
  const Dims m = dims(q, k, heads);
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data(), *op = out.typed_data(),
              *lp = lse.typed_data(), *gp = dout.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
  parallel_for(pool, m, [&](int64_t pair) {
    const int64_t bi = pair / m.h, hi = pair % m.h;
    float* kt = scratch(4 * m.d * m.sp + kRows * m.sp + 4 * kRows * m.d);
    float *vt = kt + m.d * m.sp, *dkt = vt + m.d * m.sp, *dvt = dkt + m.d * m.sp, *ds = dvt + m.d * m.sp,
          *qs = ds + kRows * m.sp, *g = qs + kRows * m.d, *o = g + kRows * m.d, *dqs = o + kRows * m.d;
    std::fill(dkt, dkt + 2 * m.d * m.sp, 0.0f);
    transpose_pair(kp, m, bi, hi, kt);
    transpose_pair(vp, m, bi, hi, vt);
    for (int64_t i0 = 0; i0 < m.t; i0 += kRows) {
      const int64_t rows = std::min(kRows, m.t - i0);
      gather_rows(qp, m, bi, hi, i0, scale, qs);
      gather_rows(gp, m, bi, hi, i0, 1.0f, g);
      gather_rows(op, m, bi, hi, i0, 1.0f, o);
      float tile_lse[kRows] = {}, delta[kRows] = {};
      for (int64_t r = 0; r < rows; ++r) {
        tile_lse[r] = lp[(bi * m.h + hi) * m.t + i0 + r];
        for (int64_t e = 0; e < m.d; ++e) delta[r] += g[r * m.d + e] * o[r * m.d + e];
      }
      backward_tile(qs, g, tile_lse, delta, rows, kt, vt, m, dkt, dvt, ds);
      reduce(ds, kt, m, dqs);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t e = 0; e < m.d; ++e) dqp[(bi * m.t + i0 + r) * m.c + hi * m.d + e] = dqs[r * m.d + e] * scale;
      }
    }
    for (int64_t j = 0; j < m.s; ++j) {
      const int64_t at = (bi * m.s + j) * m.c + hi * m.d;
      for (int64_t e = 0; e < m.d; ++e) {
        dkp[at + e] = dkt[e * m.sp + j];
        dvp[at + e] = dvt[e * m.sp + j];
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TgvacAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array>()
                                  .Arg<Array>()
                                  .Arg<Array>()
                                  .Ret<Array>()
                                  .Ret<Array>()
                                  .Attr<int64_t>("heads")
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(TgvacAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array>()
                                  .Arg<Array>()
                                  .Arg<Array>()
                                  .Arg<Array>()
                                  .Arg<Array>()
                                  .Arg<Array>()
                                  .Ret<Array>()
                                  .Ret<Array>()
                                  .Ret<Array>()
                                  .Attr<int64_t>("heads")
                                  .Attr<float>("scale"));
