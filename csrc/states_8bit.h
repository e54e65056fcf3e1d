#pragma once
// NOTE: [8-bit states]
// With state_dtype="8bit" an optimizer keeps each state of a parameter of at
// least kMinElements elements (Adam's exp_avg and exp_avg_sq, SGD's
// momentum_buffer, Lion's exp_avg) as one uint8 code per element and one
// float32 absmax per block of kBlock elements, as bitsandbytes' blockwise
// 8-bit optimizers do: an element's value is map[code] * absmax of its
// block, with bitsandbytes' dynamic maps (create_dynamic_map: signed for the
// first moment and the momentum, unsigned for the second moment), written
// out below. A block starts every kBlock elements of the tensor (the last one
// may be shorter); smaller tensors keep float32 states (bitsandbytes'
// min_8bit_size, 4096).
//
// A step runs per block, in one pass of one kernel: dequantize the block's
// codes, run the update of update_math.h in float32 for every element
// (the param is stored from the float32 states, as bitsandbytes does; Adam
// in the folded form of its bias correction, NOTE: [folded bias
// correction], one division fewer, as bitsandbytes' kernels), keep
// the block's new state values in registers (CUDA: one element per thread
// of a 256-thread block) or an L1-resident buffer (CPU), reduce their
// largest magnitude to the block's new absmax, then code each value against
// it. Two passes over values the kernel already holds, rather than coding
// with the previous absmax and rescaling: a state that grows past the old
// absmax would clip, and the absmax must be the new values' own for the
// codes to use the whole map.
//
// A value's code is the nearest one: x = value * (1 / absmax) (0 for an
// all-zero block, and for a NaN), j the largest index with map[j] <= x (0 if
// none), then j + 1 where map[j + 1] is strictly nearer (nearest_code). The
// CUDA kernels search the map in shared memory; the CPU kernels look the
// code up in a table indexed by the float's bits (NOTE: [8-bit search table]
// in csrc/cpu/states_8bit_cpu.h), with the same result for every float
// (tests/test_states_8bit.py). The absmax is the largest magnitude as a bit
// pattern (a NaN's beats every number, so a NaN state shows as a NaN block,
// as bitsandbytes' does).
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "update_math.h"

namespace lrsched_fused {
namespace states_8bit {

constexpr int64_t kBlock = 256;
constexpr int64_t kMinElements = 4096;
constexpr int kCodes = 256;

enum class MapKind { Signed, Unsigned };

// bitsandbytes' create_dynamic_map(signed=True): 127 negative and 127
// positive values (for each decade 1e-7..1e-6 up to 0.1..1, 2^i equal steps'
// midpoints, i = 0..6), 0 at index 127, and 1.
#define LRSCHED_FUSED_SIGNED_MAP \
    -0x1.fc6666p-1f, -0x1.f53334p-1f, -0x1.eep-1f, -0x1.e6ccccp-1f, \
    -0x1.df999ap-1f, -0x1.d86666p-1f, -0x1.d13334p-1f, -0x1.cap-1f, \
    -0x1.c2ccccp-1f, -0x1.bb999ap-1f, -0x1.b46666p-1f, -0x1.ad3334p-1f, \
    -0x1.a6p-1f, -0x1.9eccccp-1f, -0x1.97999ap-1f, -0x1.906666p-1f, \
    -0x1.893334p-1f, -0x1.82p-1f, -0x1.7accccp-1f, -0x1.73999ap-1f, \
    -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5ep-1f, -0x1.56ccccp-1f, \
    -0x1.4f999ap-1f, -0x1.486668p-1f, -0x1.413334p-1f, -0x1.3ap-1f, \
    -0x1.32ccccp-1f, -0x1.2b999ap-1f, -0x1.246668p-1f, -0x1.1d3334p-1f, \
    -0x1.16p-1f, -0x1.0eccccp-1f, -0x1.079998p-1f, -0x1.006666p-1f, \
    -0x1.f26664p-2f, -0x1.e4p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f, \
    -0x1.b8ccccp-2f, -0x1.aa6666p-2f, -0x1.9cp-2f, -0x1.8d9998p-2f, \
    -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626666p-2f, -0x1.54p-2f, \
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f, \
    -0x1.0cp-2f, -0x1.fb3332p-3f, -0x1.de6666p-3f, -0x1.c1999ap-3f, \
    -0x1.a4ccccp-3f, -0x1.88p-3f, -0x1.6b3334p-3f, -0x1.4e6666p-3f, \
    -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.fp-4f, -0x1.b66668p-4f, \
    -0x1.93d70ap-4f, -0x1.8851eep-4f, -0x1.7ccccep-4f, -0x1.7147aep-4f, \
    -0x1.65c29p-4f, -0x1.5a3d7p-4f, -0x1.4eb854p-4f, -0x1.433334p-4f, \
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f, \
    -0x1.09999ap-4f, -0x1.fc28f6p-5f, -0x1.e51ebap-5f, -0x1.ce147ap-5f, \
    -0x1.b70a3ep-5f, -0x1.ap-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f, \
    -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c29p-5f, \
    -0x1.fd70a4p-6f, -0x1.cf5c2ap-6f, -0x1.a147aep-6f, -0x1.733334p-6f, \
    -0x1.451ebap-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c29p-7f, \
    -0x1.3e76c8p-7f, -0x1.2c083p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f, \
    -0x1.e978d4p-8f, -0x1.c49ba6p-8f, -0x1.9fbe76p-8f, -0x1.7ae148p-8f, \
    -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f, \
    -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f, \
    -0x1.eecbfep-11f, -0x1.b3d07cp-11f, -0x1.78d5p-11f, -0x1.3dd982p-11f, \
    -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f, \
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f, \
    -0x1.040bfep-17f, -0x1.b43528p-19f, -0x1.27476ep-21f, 0.0f, \
    0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f, \
    0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f, \
    0x1.19ce0ap-12f, 0x1.8fc506p-12f, 0x1.02de02p-11f, 0x1.3dd982p-11f, \
    0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f, \
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f, \
    0x1.0c49bap-8f, 0x1.3126e8p-8f, 0x1.56041ap-8f, 0x1.7ae148p-8f, \
    0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f, \
    0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f, \
    0x1.d1eb86p-7f, 0x1.170a3ep-6f, 0x1.451ebap-6f, 0x1.733334p-6f, \
    0x1.a147aep-6f, 0x1.cf5c2ap-6f, 0x1.fd70a4p-6f, 0x1.15c29p-5f, \
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f, \
    0x1.88f5c2p-5f, 0x1.ap-5f, 0x1.b70a3ep-5f, 0x1.ce147ap-5f, \
    0x1.e51ebap-5f, 0x1.fc28f6p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f, \
    0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f, \
    0x1.4eb854p-4f, 0x1.5a3d7p-4f, 0x1.65c29p-4f, 0x1.7147aep-4f, \
    0x1.7ccccep-4f, 0x1.8851eep-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f, \
    0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f, \
    0x1.6b3334p-3f, 0x1.88p-3f, 0x1.a4ccccp-3f, 0x1.c1999ap-3f, \
    0x1.de6666p-3f, 0x1.fb3332p-3f, 0x1.0cp-2f, 0x1.1a6668p-2f, \
    0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f, \
    0x1.626666p-2f, 0x1.70ccccp-2f, 0x1.7f3334p-2f, 0x1.8d9998p-2f, \
    0x1.9cp-2f, 0x1.aa6666p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f, \
    0x1.d59998p-2f, 0x1.e4p-2f, 0x1.f26664p-2f, 0x1.006666p-1f, \
    0x1.079998p-1f, 0x1.0eccccp-1f, 0x1.16p-1f, 0x1.1d3334p-1f, \
    0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f, \
    0x1.413334p-1f, 0x1.486668p-1f, 0x1.4f999ap-1f, 0x1.56ccccp-1f, \
    0x1.5ep-1f, 0x1.653334p-1f, 0x1.6c6668p-1f, 0x1.73999ap-1f, \
    0x1.7accccp-1f, 0x1.82p-1f, 0x1.893334p-1f, 0x1.906666p-1f, \
    0x1.97999ap-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3334p-1f, \
    0x1.b46666p-1f, 0x1.bb999ap-1f, 0x1.c2ccccp-1f, 0x1.cap-1f, \
    0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df999ap-1f, 0x1.e6ccccp-1f, \
    0x1.eep-1f, 0x1.f53334p-1f, 0x1.fc6666p-1f, 0x1p+0f,

// create_dynamic_map(signed=False): 0 at index 0, 254 positive values (2^(i+1)
// midpoints per decade), and 1.
#define LRSCHED_FUSED_UNSIGNED_MAP \
    0.0f, 0x1.5cf754p-22f, 0x1.a0133p-21f, 0x1.1d367p-19f, \
    0x1.2599ecp-18f, 0x1.bc98a2p-18f, 0x1.29cbaap-17f, 0x1.0624dcp-16f, \
    0x1.c2e34p-16f, 0x1.3fd0dp-15f, 0x1.9e3p-15f, 0x1.fc8f34p-15f, \
    0x1.2d7732p-14f, 0x1.5ca6c8p-14f, 0x1.8bd662p-14f, 0x1.0cb296p-13f, \
    0x1.82a994p-13f, 0x1.f8a092p-13f, 0x1.374bc8p-12f, 0x1.724744p-12f, \
    0x1.ad42c6p-12f, 0x1.e83e44p-12f, 0x1.119ce2p-11f, 0x1.2f1aap-11f, \
    0x1.4c986p-11f, 0x1.6a162p-11f, 0x1.8793dep-11f, 0x1.a511ap-11f, \
    0x1.c28f5ep-11f, 0x1.e00d1cp-11f, 0x1.fd8adcp-11f, 0x1.2b020cp-10f, \
    0x1.74bc6ap-10f, 0x1.be76c8p-10f, 0x1.041894p-9f, 0x1.28f5c2p-9f, \
    0x1.4dd2fp-9f, 0x1.72b02p-9f, 0x1.978d4ep-9f, 0x1.bc6a8p-9f, \
    0x1.e147aep-9f, 0x1.03126ep-8f, 0x1.158104p-8f, 0x1.27ef9ep-8f, \
    0x1.3a5e34p-8f, 0x1.4cccccp-8f, 0x1.5f3b64p-8f, 0x1.71a9fap-8f, \
    0x1.841894p-8f, 0x1.96872ap-8f, 0x1.a8f5c2p-8f, 0x1.bb645cp-8f, \
    0x1.cdd2fp-8f, 0x1.e0418ap-8f, 0x1.f2b01ep-8f, 0x1.028f5cp-7f, \
    0x1.0bc6a8p-7f, 0x1.14fdf2p-7f, 0x1.1e354p-7f, 0x1.276c8ap-7f, \
    0x1.30a3d6p-7f, 0x1.39db24p-7f, 0x1.43126ep-7f, 0x1.5eb854p-7f, \
    0x1.8ccccep-7f, 0x1.bae146p-7f, 0x1.e8f5c4p-7f, 0x1.0b851ep-6f, \
    0x1.228f5ep-6f, 0x1.39999ap-6f, 0x1.50a3d6p-6f, 0x1.67ae16p-6f, \
    0x1.7eb852p-6f, 0x1.95c28ep-6f, 0x1.accccep-6f, 0x1.c3d70ep-6f, \
    0x1.dae146p-6f, 0x1.f1eb86p-6f, 0x1.047aep-5f, 0x1.1p-5f, \
    0x1.1b851ep-5f, 0x1.270a3ep-5f, 0x1.328f5ep-5f, 0x1.3e147ap-5f, \
    0x1.49999ap-5f, 0x1.551eb8p-5f, 0x1.60a3d6p-5f, 0x1.6c28f6p-5f, \
    0x1.77ae14p-5f, 0x1.833334p-5f, 0x1.8eb85p-5f, 0x1.9a3d7p-5f, \
    0x1.a5c28ep-5f, 0x1.b147aep-5f, 0x1.bccccep-5f, 0x1.c851eep-5f, \
    0x1.d3d70ep-5f, 0x1.df5c2ap-5f, 0x1.eae146p-5f, 0x1.f66666p-5f, \
    0x1.00f5c4p-4f, 0x1.06b854p-4f, 0x1.0c7ae2p-4f, 0x1.123d7p-4f, \
    0x1.18p-4f, 0x1.1dc29p-4f, 0x1.23852p-4f, 0x1.2947aep-4f, \
    0x1.2f0a3ep-4f, 0x1.34cccep-4f, 0x1.3a8f5ep-4f, 0x1.4051ecp-4f, \
    0x1.46147cp-4f, 0x1.4bd70ap-4f, 0x1.51999ap-4f, 0x1.575c2ap-4f, \
    0x1.5d1eb8p-4f, 0x1.62e148p-4f, 0x1.68a3d6p-4f, 0x1.6e6666p-4f, \
    0x1.7428f6p-4f, 0x1.79eb86p-4f, 0x1.7fae16p-4f, 0x1.8570a4p-4f, \
    0x1.8b3334p-4f, 0x1.90f5c4p-4f, 0x1.96b852p-4f, 0x1.a8p-4f, \
    0x1.c4ccccp-4f, 0x1.e1999ap-4f, 0x1.fe6666p-4f, 0x1.0d9998p-3f, \
    0x1.1cp-3f, 0x1.2a6668p-3f, 0x1.38ccccp-3f, 0x1.473334p-3f, \
    0x1.559998p-3f, 0x1.64p-3f, 0x1.726668p-3f, 0x1.80ccccp-3f, \
    0x1.8f3334p-3f, 0x1.9d9998p-3f, 0x1.acp-3f, 0x1.ba6668p-3f, \
    0x1.c8ccccp-3f, 0x1.d73334p-3f, 0x1.e59998p-3f, 0x1.f4p-3f, \
    0x1.013332p-2f, 0x1.086666p-2f, 0x1.0f999ap-2f, 0x1.16ccccp-2f, \
    0x1.1ep-2f, 0x1.253334p-2f, 0x1.2c6666p-2f, 0x1.339998p-2f, \
    0x1.3accccp-2f, 0x1.42p-2f, 0x1.493334p-2f, 0x1.506666p-2f, \
    0x1.579998p-2f, 0x1.5eccccp-2f, 0x1.66p-2f, 0x1.6d3334p-2f, \
    0x1.746666p-2f, 0x1.7b9998p-2f, 0x1.82ccccp-2f, 0x1.8ap-2f, \
    0x1.913334p-2f, 0x1.986666p-2f, 0x1.9f9998p-2f, 0x1.a6ccccp-2f, \
    0x1.aep-2f, 0x1.b53334p-2f, 0x1.bc6666p-2f, 0x1.c39998p-2f, \
    0x1.caccccp-2f, 0x1.d2p-2f, 0x1.d93334p-2f, 0x1.e06666p-2f, \
    0x1.e79998p-2f, 0x1.eeccccp-2f, 0x1.f6p-2f, 0x1.fd3332p-2f, \
    0x1.023334p-1f, 0x1.05ccccp-1f, 0x1.096666p-1f, 0x1.0dp-1f, \
    0x1.109998p-1f, 0x1.143334p-1f, 0x1.17ccccp-1f, 0x1.1b6668p-1f, \
    0x1.1fp-1f, 0x1.22999ap-1f, 0x1.263334p-1f, 0x1.29ccccp-1f, \
    0x1.2d6668p-1f, 0x1.31p-1f, 0x1.34999ap-1f, 0x1.383334p-1f, \
    0x1.3bccccp-1f, 0x1.3f6668p-1f, 0x1.43p-1f, 0x1.46999ap-1f, \
    0x1.4a3334p-1f, 0x1.4dccccp-1f, 0x1.516668p-1f, 0x1.55p-1f, \
    0x1.58999ap-1f, 0x1.5c3334p-1f, 0x1.5fccccp-1f, 0x1.636668p-1f, \
    0x1.67p-1f, 0x1.6a999ap-1f, 0x1.6e3334p-1f, 0x1.71ccccp-1f, \
    0x1.756668p-1f, 0x1.79p-1f, 0x1.7c999ap-1f, 0x1.803334p-1f, \
    0x1.83ccccp-1f, 0x1.876668p-1f, 0x1.8bp-1f, 0x1.8e9998p-1f, \
    0x1.923334p-1f, 0x1.95ccccp-1f, 0x1.996668p-1f, 0x1.9dp-1f, \
    0x1.a09998p-1f, 0x1.a43334p-1f, 0x1.a7ccccp-1f, 0x1.ab6668p-1f, \
    0x1.afp-1f, 0x1.b29998p-1f, 0x1.b63334p-1f, 0x1.b9ccccp-1f, \
    0x1.bd6668p-1f, 0x1.c1p-1f, 0x1.c49998p-1f, 0x1.c83334p-1f, \
    0x1.cbccccp-1f, 0x1.cf6668p-1f, 0x1.d3p-1f, 0x1.d69998p-1f, \
    0x1.da3334p-1f, 0x1.ddccccp-1f, 0x1.e16668p-1f, 0x1.e5p-1f, \
    0x1.e89998p-1f, 0x1.ec3334p-1f, 0x1.efccccp-1f, 0x1.f36668p-1f, \
    0x1.f7p-1f, 0x1.fa9998p-1f, 0x1.fe3334p-1f, 0x1p+0f,

// The maps as host arrays (the CUDA kernels keep device copies of their own).
inline constexpr float kSignedMap[kCodes] = {LRSCHED_FUSED_SIGNED_MAP};
inline constexpr float kUnsignedMap[kCodes] = {LRSCHED_FUSED_UNSIGNED_MAP};

inline const float* host_map(MapKind kind) {
  return kind == MapKind::Signed ? kSignedMap : kUnsignedMap;
}

C10_HOST_DEVICE inline int64_t num_blocks(int64_t numel) {
  return (numel + kBlock - 1) / kBlock;
}

// What a block's values are coded against: 1 / absmax (0 for an all-zero
// block, and for a NaN absmax: the block then reads NaN whatever its codes).
// Multiplying by it, as bitsandbytes' CUDA kernels do, rather than dividing:
// a division costs the CPU's AVX2 loop 5 cycles per 8 values, as much as
// the rest of the coding (bitsandbytes' CPU kernel divides; a code differs
// where the two roundings fall on either side of a crossing).
C10_HOST_DEVICE inline float inverse_scale(float absmax) {
  return absmax > 0.0f ? 1.0f / absmax : 0.0f;
}

// The value a state is coded from: value * inverse_scale(absmax), in [-1, 1]
// up to its rounding; 0 for a NaN.
C10_HOST_DEVICE inline float normalized(float value, float inverse) {
  const float x = value * inverse;
  return x == x ? x : 0.0f;
}

// Whether x is coded j + 1 rather than j, for lower = map[j] and upper =
// map[j + 1] (+inf past the last code): x reached map[j + 1], or it is past
// map[j] and strictly nearer to map[j + 1].
C10_HOST_DEVICE inline bool rounds_up(float x, float lower, float upper) {
  return x >= upper || (x >= lower && ::fabsf(x - upper) < ::fabsf(x - lower));
}

// The code of x (NOTE: [8-bit states]) by binary search over the 256 values.
C10_HOST_DEVICE inline int nearest_code(const float* map, float x) {
  int j = 0;
  for (int step = kCodes / 2; step > 0; step /= 2) {
    j = map[j + step] <= x ? j + step : j;
  }
  return j + 1 < kCodes && rounds_up(x, map[j], map[j + 1]) ? j + 1 : j;
}

// |value| as a bit pattern: the block's absmax is the largest (NOTE: [8-bit states]).
C10_HOST_DEVICE inline uint32_t magnitude_bits(float value) {
  uint32_t bits;
  ::memcpy(&bits, &value, sizeof(bits));
  return bits & 0x7FFFFFFFu;
}

C10_HOST_DEVICE inline float from_bits(uint32_t bits) {
  float value;
  ::memcpy(&value, &bits, sizeof(value));
  return value;
}

// What an op's coded kernels (the CPU's and the CUDA's) need of it: its coded
// states (kStates, in the op's slot order, with the map of each), what is
// computed once per tensor from the group's values and its step count before
// this step (Values, made by make; grad gives its GradOptions), and one
// element's update, in float32.
template <bool kDecoupled>
struct AdamRule {
  static constexpr int kStates = 2;
  C10_HOST_DEVICE static constexpr MapKind map(int k) { return k == 0 ? MapKind::Signed : MapKind::Unsigned; }
  using Values = AdamCoefficients<float>;
  C10_HOST_DEVICE static Values make(const double* schedule_state, int64_t group_index,
                                     const GradOptions<float>& grad, double step_before, bool) {
    const AdamGroupValues group = adam_group_values(schedule_state, group_index);
    return make_folded_adam_coefficients<float>(group, grad, adam_step_terms(group, step_before + 1.0));
  }
  template <typename V>
  C10_HOST_DEVICE static auto& grad(V& v) { return v.grad; }
  template <typename scalar_t>
  C10_HOST_DEVICE static void update(float& p, float& g, float (&s)[kStates], const Values& c) {
    float unused = 0;
    adam_update<float, false, kDecoupled, scalar_t, true>(p, g, s[0], s[1], unused, c);
  }
};

struct SgdRule {
  static constexpr int kStates = 1;
  C10_HOST_DEVICE static constexpr MapKind map(int) { return MapKind::Signed; }
  struct Values {
    SgdCoefficients<float> coefficients;
    float first_step;  // 1: the buffer has no history yet (step count 0; NOTE: [switches as numbers])
  };
  C10_HOST_DEVICE static Values make(const double* schedule_state, int64_t group_index,
                                     const GradOptions<float>& grad, double step_before, bool nesterov) {
    return {make_sgd_coefficients<float>(sgd_group_values(schedule_state, group_index), nesterov, grad),
            step_before == 0.0 ? 1.0f : 0.0f};
  }
  template <typename V>
  C10_HOST_DEVICE static auto& grad(V& v) { return v.coefficients.grad; }
  template <typename scalar_t>
  C10_HOST_DEVICE static void update(float& p, float& g, float (&s)[kStates], const Values& c) {
    sgd_update<float, true, scalar_t>(p, g, s[0], c.first_step, c.coefficients);
  }
};

struct LionRule {
  static constexpr int kStates = 1;
  C10_HOST_DEVICE static constexpr MapKind map(int) { return MapKind::Signed; }
  using Values = LionCoefficients<float>;
  C10_HOST_DEVICE static Values make(const double* schedule_state, int64_t group_index,
                                     const GradOptions<float>& grad, double, bool) {
    return make_lion_coefficients<float>(lion_group_values(schedule_state, group_index), grad);
  }
  template <typename V>  // Values or const Values
  C10_HOST_DEVICE static auto& grad(V& v) { return v.grad; }
  template <typename scalar_t>
  C10_HOST_DEVICE static void update(float& p, float& g, float (&s)[kStates], const Values& c) {
    lion_update<float, scalar_t>(p, g, s[0], c);
  }
};

}  // namespace states_8bit
}  // namespace lrsched_fused
