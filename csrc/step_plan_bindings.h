#pragma once
// Python bindings of the step plan's C++ half (csrc/step_plan.h) and of the grad checks.
#include <torch/extension.h>

#include "op_checks.h"
#include "step_plan.h"

namespace lrsched_fused {

inline void bind_step_plan(pybind11::module& m) {
  namespace py = pybind11;
  using Problem = GradProblem;
  m.def("grad_problems", &grad_problems,
        "(index, problem) of each grad that does not match its parameter (NOTE: [step plan])");
  m.attr("GRAD_SPARSE") = static_cast<int64_t>(Problem::Sparse);
  m.attr("GRAD_MISMATCH") = static_cast<int64_t>(Problem::Mismatch);
  m.attr("GRAD_OTHER_STRIDES") = static_cast<int64_t>(Problem::OtherStrides);
  m.attr("GRAD_VANISHED") = static_cast<int64_t>(Problem::Vanished);
  m.attr("GRAD_APPEARED") = static_cast<int64_t>(Problem::Appeared);
  py::class_<GroupPlan>(m, "GroupPlan", "A param group's op lists, kept across steps (NOTE: [step plan])")
      .def(py::init<std::vector<at::Tensor>, const std::string&>(), py::arg("params"), py::arg("op_name"))
      .def("add_bucket", &GroupPlan::add_bucket, py::arg("positions"), py::arg("states"),
           py::arg("element_offsets"))
      .def("refresh_grads", &GroupPlan::refresh_grads)
      .def("step", &GroupPlan::step, py::arg("bucket"), py::arg("schedule_state"), py::arg("group_index"),
           py::arg("flags"), py::arg("grad_scale"), py::arg("found_inf"), py::arg("clip_coef"),
           py::call_guard<py::gil_scoped_release>());
  m.def("grad_norm_partial_of_plans", &grad_norm_partial_of_plans, py::arg("plans"), py::arg("norm_type"),
        py::arg("grad_scale"), py::arg("partial"), py::call_guard<py::gil_scoped_release>(),
        "grad_norm_partial_ over the grads the plans hold for this step (NOTE: [grad norm])");
}

}  // namespace lrsched_fused
