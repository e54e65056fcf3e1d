// CUDA kernel of clip_coefficient_ (NOTE: [grad norm] in csrc/grad_norm_math.h):
// one thread turns the float64 `partial` into the total norm and the clip
// coefficient, on the current stream, so a clipped step stays sync-free and
// capturable. The math is grad_norm_math.h's, as on the CPU.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../grad_norm_math.h"
#include "../op_checks.h"

namespace lrsched_fused {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void clip_coefficient_kernel(const double* partial, NormOrder order, double max_norm,
                                        scalar_t* total_norm, scalar_t* clip_coef) {
  const auto result = clip_coefficient<scalar_t, at::opmath_type<scalar_t>>(order, *partial, max_norm);
  *total_norm = result.total_norm;
  *clip_coef = result.clip_coef;
}

void clip_coefficient_cuda(const at::Tensor& partial, double norm_type, double max_norm, const at::Tensor& total_norm,
                           const at::Tensor& clip_coef) {
  check_clip_coefficient_args(partial, norm_type, max_norm, total_norm, clip_coef);
  const c10::cuda::CUDAGuard guard(partial.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(partial.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, total_norm.scalar_type(), "clip_coefficient_cuda", [&] {
    clip_coefficient_kernel<scalar_t><<<1, 1, 0, stream>>>(partial.const_data_ptr<double>(), norm_order(norm_type),
                                                           max_norm, total_norm.mutable_data_ptr<scalar_t>(),
                                                           clip_coef.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(lrsched_fused, CUDA, m) {
  m.impl("clip_coefficient_", &cuda::clip_coefficient_cuda);
}

}  // namespace lrsched_fused
