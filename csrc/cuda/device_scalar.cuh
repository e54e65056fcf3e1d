#pragma once
// One-element tensors that a kernel reads in device memory (GradScaler's
// grad_scale and found_inf, a clip coefficient, a plateau metric): the host
// passes their address and dtype, never their value, so nothing syncs and a
// captured graph reads the value of each replay.
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <optional>

#include "../op_checks.h"

namespace lrsched_fused {
namespace cuda {

// A one-element tensor read inside a kernel; data == nullptr when absent.
struct DeviceScalar {
  const void* data;
  c10::ScalarType dtype;
};

__device__ inline double load_scalar(const DeviceScalar& s) {
  switch (s.dtype) {
    case c10::ScalarType::Double:
      return *static_cast<const double*>(s.data);
    case c10::ScalarType::Float:
      return *static_cast<const float*>(s.data);
    case c10::ScalarType::Half:
      return static_cast<float>(*static_cast<const c10::Half*>(s.data));
    case c10::ScalarType::BFloat16:
      return static_cast<float>(*static_cast<const c10::BFloat16*>(s.data));
    case c10::ScalarType::Long:
      return static_cast<double>(*static_cast<const int64_t*>(s.data));
    case c10::ScalarType::Int:
      return *static_cast<const int32_t*>(s.data);
    case c10::ScalarType::Short:
      return *static_cast<const int16_t*>(s.data);
    case c10::ScalarType::Char:
      return *static_cast<const int8_t*>(s.data);
    case c10::ScalarType::Byte:
      return *static_cast<const uint8_t*>(s.data);
    case c10::ScalarType::Bool:
      return *static_cast<const bool*>(s.data) ? 1.0 : 0.0;
    default:
      return 0.0;  // unreachable: device_scalar() admits only the types above
  }
}

__device__ inline bool is_set(const DeviceScalar& s) {
  return s.data != nullptr && load_scalar(s) != 0.0;
}

// `t` as a kernel reads it, checked: one element of a real dtype, on the
// device of `owner` (the tensor the kernels write, named `owner_name` in the
// error).
inline DeviceScalar device_scalar(const std::optional<at::Tensor>& t, const at::Tensor& owner,
                                  const char* owner_name, const char* name) {
  if (!t.has_value()) {
    return {nullptr, at::kFloat};
  }
  check_scalar_tensor(t, name);
  const at::ScalarType dtype = t->scalar_type();
  switch (dtype) {
    case at::kDouble:
    case at::kFloat:
    case at::kHalf:
    case at::kBFloat16:
    case at::kLong:
    case at::kInt:
    case at::kShort:
    case at::kChar:
    case at::kByte:
    case at::kBool:
      break;
    default:
      TORCH_CHECK(false, name, " has dtype ", dtype, "; accepted: a floating, integer or bool dtype");
  }
  TORCH_CHECK(t->device() == owner.device(), name, " is on ", t->device(), " but ", owner_name, " is on ",
              owner.device(), "; move it to ", owner.device());
  return {t->const_data_ptr(), dtype};
}

}  // namespace cuda
}  // namespace lrsched_fused
