// The Autograd kernels of the update ops, Muon's passes and the clipping ops. They have no derivative: they
// update parameters in place, as torch's fused optimizers do under
// torch.no_grad(). Without a kernel of their own, torch's boxed autograd
// fallback would run, which boxes every argument (each tensor of each list
// into an IValue) on every call: a third of a step of small tensors
// (NOTE: [step plan]). These refuse grad mode with parameters that require
// grad, then go on below autograd unboxed.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <type_traits>

#include "op_signatures.h"
#include "update_ops.h"

namespace lrsched_fused {
namespace {

template <typename Arg>
void refuse_grad_requiring(const char* op, const Arg& arg) {
  if constexpr (std::is_same_v<std::decay_t<Arg>, at::TensorList>) {
    for (const at::Tensor& t : arg) {
      TORCH_CHECK(!t.requires_grad(), op, " updates tensors in place and has no derivative: call it under "
                  "torch.no_grad() (as the optimizers' step() does), not with a tensor that requires grad");
    }
  }
}

constexpr char kAdamStep[] = "lrsched_fused::adam_step_";  // AdamStepOp::kName
constexpr char kSgdStep[] = "lrsched_fused::sgd_step_";    // SgdStepOp::kName
constexpr char kLionStep[] = "lrsched_fused::lion_step_";  // LionStepOp::kName
constexpr char kMuonMomentum[] = "lrsched_fused::muon_momentum_";
constexpr char kMuonApply[] = "lrsched_fused::muon_apply_";
constexpr char kGradNormPartial[] = "lrsched_fused::grad_norm_partial_";
constexpr char kClipCoefficient[] = "lrsched_fused::clip_coefficient_";

template <typename Signature, const char* kName>
struct BelowAutograd;

template <typename... Args, const char* kName>
struct BelowAutograd<void(Args...), kName> {
  static void call(Args... args) {
    if (c10::GradMode::is_enabled()) {
      (refuse_grad_requiring(kName, args), ...);
    }
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").typed<void(Args...)>();
    const c10::impl::ExcludeDispatchKeyGuard below(c10::autograd_dispatch_keyset_with_ADInplaceOrView);
    op.call(args...);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(lrsched_fused, Autograd, m) {
  m.impl(AdamStepOp::kName, &BelowAutograd<UpdateStepSignature, kAdamStep>::call);
  m.impl(SgdStepOp::kName, &BelowAutograd<UpdateStepSignature, kSgdStep>::call);
  m.impl(LionStepOp::kName, &BelowAutograd<UpdateStepSignature, kLionStep>::call);
  m.impl("muon_momentum_", &BelowAutograd<MuonMomentumSignature, kMuonMomentum>::call);
  m.impl("muon_apply_", &BelowAutograd<MuonApplySignature, kMuonApply>::call);
  m.impl("grad_norm_partial_", &BelowAutograd<GradNormPartialSignature, kGradNormPartial>::call);
  m.impl("clip_coefficient_", &BelowAutograd<ClipCoefficientSignature, kClipCoefficient>::call);
}

}  // namespace lrsched_fused
