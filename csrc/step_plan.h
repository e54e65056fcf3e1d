#pragma once
// The C++ half of the step plan (NOTE: [step plan] in lrsched_fused/step_plan.py).
//
// A GroupPlan keeps the tensor lists of one param group's op calls (one
// bucket per dtype) across steps, so that a step hands the ops no Python
// lists: converting a Python list to the op's tensor list costs ~100 ns per
// tensor, more than a whole step of a small tensor. Each step it reads every
// parameter's grad itself (refresh_grads), keeps the ones it already holds,
// checks new ones, and reports a grad that appeared or vanished so that
// Python rebuilds the plan. Then each bucket's op is called through the
// dispatcher with the kept lists (profiler, dispatch modes and the device's
// kernel as with any call of the op).
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "op_checks.h"
#include "op_signatures.h"
#include "update_ops.h"

namespace lrsched_fused {

class GroupPlan {
 public:
  // The group's parameters and the update op its buckets call (its name, e.g. "adam_step_").
  GroupPlan(std::vector<at::Tensor> params, const std::string& op_name)
      : params_(std::move(params)),
        has_grad_(params_.size(), false),
        op_(c10::Dispatcher::singleton()
                .findSchemaOrThrow(("lrsched_fused::" + op_name).c_str(), "")
                .typed<UpdateStepSignature>()) {}

  // The parameters at `positions` (each with a grad, one dtype), their
  // states and element offsets: the op's `states` and `element_offsets`
  // arguments (NOTE: [update op declaration]).
  int64_t add_bucket(const std::vector<int64_t>& positions, std::vector<at::Tensor> states,
                     std::vector<int64_t> element_offsets) {
    Bucket bucket;
    for (const int64_t position : positions) {
      TORCH_CHECK(position >= 0 && position < static_cast<int64_t>(params_.size()) && !has_grad_[position],
                  "GroupPlan: bad or repeated position ", position);
      has_grad_[position] = true;
      bucket.params.push_back(params_[position]);
    }
    bucket.positions = positions;
    bucket.grads.resize(positions.size());
    bucket.states = std::move(states);
    bucket.element_offsets = std::move(element_offsets);
    buckets_.push_back(std::move(bucket));
    return static_cast<int64_t>(buckets_.size()) - 1;
  }

  // Reads every parameter's grad. Returns (-1, 0) when each fits its
  // parameter (one with other strides is copied to the parameter's layout at
  // the step), and hands them to the buckets for the next step. Else
  // (position, GradProblem) of the first that does not, including a grad
  // that vanished or appeared (the plan must be rebuilt); nothing is taken.
  std::pair<int64_t, int64_t> refresh_grads() {
    for (size_t i = 0; i < params_.size(); ++i) {
      const at::Tensor& grad = params_[i].grad();
      if (grad.defined() != has_grad_[i]) {
        const auto problem = grad.defined() ? GradProblem::Appeared : GradProblem::Vanished;
        return {static_cast<int64_t>(i), static_cast<int64_t>(problem)};
      }
      if (grad.defined()) {
        const std::optional<GradProblem> problem = grad_problem(params_[i], grad);
        if (problem.has_value() && *problem != GradProblem::OtherStrides) {
          return {static_cast<int64_t>(i), static_cast<int64_t>(*problem)};
        }
      }
    }
    for (Bucket& bucket : buckets_) {
      bucket.relayout.clear();
      for (size_t k = 0; k < bucket.params.size(); ++k) {
        bucket.grads[k] = bucket.params[k].grad();
        if (bucket.grads[k].strides() != bucket.params[k].strides()) {
          bucket.relayout.push_back(k);
        }
      }
      bucket.has_grads = true;
    }
    return {-1, 0};
  }

  // One op call for a bucket, with the plan's lists.
  void step(int64_t bucket_index, const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
            const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
            const std::optional<at::Tensor>& clip_coef) {
    Bucket& bucket = bucket_at(bucket_index);
    op_.call(bucket.params, grads_for_op(bucket), bucket.states, schedule_state, group_index, flags, grad_scale,
             found_inf, clip_coef, bucket.element_offsets);
    finish(bucket, grad_scale);
  }

  // The grads this step's buckets hold (refresh_grads() ran), appended to `out`.
  void append_grads(std::vector<at::Tensor>& out) const {
    for (const Bucket& bucket : buckets_) {
      TORCH_CHECK(bucket.has_grads, "GroupPlan: refresh_grads() must run before the grads are read");
      out.insert(out.end(), bucket.grads.begin(), bucket.grads.end());
    }
  }

 private:
  struct Bucket {
    std::vector<int64_t> positions;
    std::vector<at::Tensor> params;
    std::vector<at::Tensor> grads;
    std::vector<size_t> relayout;  // grads whose strides differ from their parameter's
    std::vector<at::Tensor> relayout_grads;  // grads with those copied to the parameter's layout
    std::vector<at::Tensor> states;
    std::vector<int64_t> element_offsets;  // NOTE: [stochastic rounding]; empty without
    bool has_grads = false;  // refresh_grads() ran since the last step
  };

  Bucket& bucket_at(int64_t index) {
    TORCH_CHECK(index >= 0 && index < static_cast<int64_t>(buckets_.size()), "GroupPlan: no bucket ", index);
    TORCH_CHECK(buckets_[index].has_grads, "GroupPlan: refresh_grads() must run before each step");
    return buckets_[index];
  }

  // The grads in their parameters' layout: a grad with other strides is
  // copied each step (the kernels walk parameter and grad storage in step).
  static const std::vector<at::Tensor>& grads_for_op(Bucket& bucket) {
    if (bucket.relayout.empty()) {
      return bucket.grads;
    }
    bucket.relayout_grads = bucket.grads;
    for (const size_t k : bucket.relayout) {
      bucket.relayout_grads[k] = at::empty_like(bucket.params[k]).copy_(bucket.grads[k]);
    }
    return bucket.relayout_grads;
  }

  // After the op: with a GradScaler the kernels unscaled the grads in
  // place, as torch's fused optimizers do, so a copied grad goes back to the
  // parameter's grad. Then the grads are let go: holding them until the next
  // step would keep them alive through zero_grad(set_to_none=True).
  static void finish(Bucket& bucket, const std::optional<at::Tensor>& grad_scale) {
    if (grad_scale.has_value()) {
      for (const size_t k : bucket.relayout) {
        bucket.grads[k].copy_(bucket.relayout_grads[k]);
      }
    }
    for (at::Tensor& grad : bucket.grads) {
      grad.reset();
    }
    bucket.relayout_grads.clear();
    bucket.has_grads = false;
  }

  std::vector<at::Tensor> params_;
  std::vector<bool> has_grad_;
  std::vector<Bucket> buckets_;
  c10::TypedOperatorHandle<UpdateStepSignature> op_;
};

// grad_norm_partial_ over the grads of this step's plans (NOTE: [grad norm]),
// without handing them to Python.
inline void grad_norm_partial_of_plans(const std::vector<const GroupPlan*>& plans, double norm_type,
                                       const std::optional<at::Tensor>& grad_scale, const at::Tensor& partial) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lrsched_fused::grad_norm_partial_", "")
                             .typed<GradNormPartialSignature>();
  std::vector<at::Tensor> grads;
  for (const GroupPlan* plan : plans) {
    plan->append_grads(grads);
  }
  op.call(grads, norm_type, grad_scale, partial);
}

}  // namespace lrsched_fused
