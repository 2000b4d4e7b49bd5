// Direct float32 convolution for XLA:CPU, stride 1, called through the XLA FFI (tgvac_jax/models/cpu_conv.py builds,
// registers and calls it, and pads the input first).
//
// In a padded NHWC image, kernel row dy's taps over all input channels for output pixel (y, x) are one contiguous
// run of kw * ci floats starting at padded pixel (y + dy, x). So the conv is, per kernel row, a matrix product
// whose left operand is the image itself read with a row stride of ci: no im2col copy. Output pixels are walked in
// padded-width order (position p = y * wp + x, x < wp); the kw - 1 positions per row that fall in the padding are
// computed and not stored (6 % extra work at a 32x32 map with a 3x3 kernel). A register tile of kRows positions x
// kVecs vectors of output channels accumulates over every tap and input channel before it is stored once.
//
// Layout: x (N, Hp, Wp, Ci) padded, w (KH, KW, Ci, Co) HWIO, out (N, Hp - KH + 1, Wp - KW + 1, Co); Co % 16 == 0.

#include <algorithm>
#include <cstdint>

#include "cpu_kernels.h"

namespace ffi = xla::ffi;
using tgvac::kLanes;
using tgvac::load;
using tgvac::store;
using tgvac::Vec;

using Array = ffi::Buffer<ffi::F32>;
using Result = ffi::ResultBuffer<ffi::F32>;

namespace {

// The register tile: 6 x 4 accumulators of 16 floats fill 24 of AVX-512's 32 registers; with 16 AVX2 registers
// (each Vec is two) 6 x 1 leaves room for the loaded weights and the broadcast input.
#ifdef __AVX512F__
constexpr int kRows = 6, kVecs = 4;
#else
constexpr int kRows = 6, kVecs = 1;
#endif
// Output positions per work item (with all output channels): big enough that claiming one costs nothing, small
// enough that a 14-frame 8x8 map still gives both threads work.
constexpr int64_t kItemPositions = kRows * 8;

struct Geometry {
  int64_t n, hp, wp, ci, kh, kw, co, ho, wo;
  int64_t run() const { return kw * ci; }                   // one kernel row's taps, contiguous in a padded row
  int64_t positions() const { return (ho - 1) * wp + wo; }  // padded-width positions up to the last output pixel
};

// Output channels [co0, co0 + 16 V) of positions [p0, p0 + R) of one image.
template <int R, int V>
inline void tile(const Geometry& g, const float* x, const float* w, int64_t p0, int64_t co0, float* out) {
  Vec acc[R][V] = {};
  const int64_t run = g.run();
  for (int64_t dy = 0; dy < g.kh; ++dy) {
    const float* a = x + (p0 + dy * g.wp) * g.ci;
    const float* b = w + dy * run * g.co + co0;
    for (int64_t k = 0; k < run; ++k) {
      Vec bv[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) bv[v] = load(b + k * g.co + v * kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const Vec av = Vec{} + a[r * g.ci + k];
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[r][v] += av * bv[v];
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int64_t p = p0 + r, y = p / g.wp, col = p % g.wp;
    if (col >= g.wo) continue;  // a padding column
    float* o = out + (y * g.wo + col) * g.co + co0;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) store(o + v * kLanes, acc[r][v]);
  }
}

// Positions [p0, p1) for output channels [co0, co0 + 16 V): whole tiles, then one short tile.
template <int V>
void tiles(const Geometry& g, const float* x, const float* w, int64_t p0, int64_t p1, int64_t co0, float* out) {
  int64_t p = p0;
  for (; p + kRows <= p1; p += kRows) tile<kRows, V>(g, x, w, p, co0, out);
  switch (p1 - p) {
    case 1: tile<1, V>(g, x, w, p, co0, out); break;
    case 2: tile<2, V>(g, x, w, p, co0, out); break;
    case 3: tile<3, V>(g, x, w, p, co0, out); break;
    case 4: tile<4, V>(g, x, w, p, co0, out); break;
    case 5: tile<5, V>(g, x, w, p, co0, out); break;
    default: break;
  }
}
static_assert(kRows == 6, "tiles() ends with tiles of 1 to 5 positions");

ffi::Error Conv(ffi::ThreadPool pool, Array x, Array w, Result out) {
  const auto xd = x.dimensions(), wd = w.dimensions(), od = out->dimensions();
  if (xd.size() != 4 || wd.size() != 4 || od.size() != 4 || wd[2] != xd[3] || wd[3] != od[3] ||
      od[1] != xd[1] - wd[0] + 1 || od[2] != xd[2] - wd[1] + 1 || od[0] != xd[0]) {
    return ffi::Error::InvalidArgument("tgvac_conv: shapes are not x (N,Hp,Wp,Ci), w (KH,KW,Ci,Co), valid output");
  }
  const Geometry g{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], wd[3], od[1], od[2]};
  if (g.co % kLanes) return ffi::Error::InvalidArgument("tgvac_conv: output channels must be a multiple of 16");
  if (g.ho <= 0 || g.wo <= 0) return ffi::Error::Success();
  const int64_t positions = g.positions();
  const int64_t items = (positions + kItemPositions - 1) / kItemPositions;
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* op = out->typed_data();
  tgvac::parallel_for_items(pool, g.n * items, [&](int64_t item) {
    const int64_t n = item / items, p0 = (item % items) * kItemPositions;
    const int64_t p1 = std::min(positions, p0 + kItemPositions);
    const float* xn = xp + n * g.hp * g.wp * g.ci;
    float* on = op + n * g.ho * g.wo * g.co;
    int64_t co0 = 0;
    for (; co0 + kVecs * kLanes <= g.co; co0 += kVecs * kLanes) tiles<kVecs>(g, xn, wp, p0, p1, co0, on);
    // The last channels (fewer than kVecs vectors of 16): pairs of vectors, then single ones.
    for (; kVecs > 2 && co0 + 2 * kLanes <= g.co; co0 += 2 * kLanes) {
      tiles<(kVecs > 2 ? 2 : 1)>(g, xn, wp, p0, p1, co0, on);
    }
    for (; co0 < g.co; co0 += kLanes) tiles<1>(g, xn, wp, p0, p1, co0, on);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TgvacConv, Conv,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<Array>().Arg<Array>().Ret<Array>());
