// steadystep._C: the C++ schedule math, bound for the Python schedulers. Binds, no logic.

#include <steadystep/schedules/cosine_annealing.h>
#include <steadystep/schedules/lambda.h>
#include <steadystep/schedules/schedule.h>
#include <steadystep/schedules/step.h>
#include <steadystep/schedules/warmup.h>
#include <steadystep/version.h>

#include <c10/util/Exception.h>
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;
namespace sched = steadystep::schedules;

namespace {
// Every schedule exposes the same two calls to Python.
template <typename Schedule>
py::class_<Schedule> bind_schedule(py::module_& m, const char* name) {
  py::class_<Schedule> cls(m, name);
  cls.def("get_lr", &Schedule::get_lr, py::arg("ctx"));
  cls.def("closed_form_lr", &Schedule::closed_form_lr, py::arg("ctx"));
  return cls;
}
}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "steadystep's C++ core (schedule math); ops live in torch.ops.steadystep";
  m.attr("__version__") = STEADYSTEP_VERSION;

  // Bad arguments surface as the exceptions PyTorch raises for them, without C++ backtraces.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) {
        std::rethrow_exception(p);
      }
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  py::class_<sched::StepContext>(m, "StepContext")
      .def(py::init([](int64_t last_epoch, int64_t step_count, bool is_initial,
                       std::vector<double> base_lrs, std::vector<double> lrs) {
             return sched::StepContext{last_epoch, step_count, is_initial, std::move(base_lrs),
                                       std::move(lrs)};
           }),
           py::arg("last_epoch"), py::arg("step_count"), py::arg("is_initial"), py::arg("base_lrs"),
           py::arg("lrs"));

  bind_schedule<sched::CosineAnnealing>(m, "CosineAnnealing")
      .def(py::init<double, double>(), py::arg("T_max"), py::arg("eta_min") = 0.0);
  bind_schedule<sched::Lambda>(m, "Lambda")
      .def(py::init<std::vector<sched::LrLambda>, size_t>(), py::arg("lr_lambdas"),
           py::arg("groups"));
  bind_schedule<sched::Multiplicative>(m, "Multiplicative")
      .def(py::init<std::vector<sched::LrLambda>, size_t>(), py::arg("lr_lambdas"),
           py::arg("groups"));
  bind_schedule<sched::Step>(m, "Step").def(py::init<int64_t, double>(), py::arg("step_size"),
                                            py::arg("gamma") = 0.1);
  bind_schedule<sched::MultiStep>(m, "MultiStep")
      .def(py::init<std::vector<int64_t>, double>(), py::arg("milestones"),
           py::arg("gamma") = 0.1);
  bind_schedule<sched::Exponential>(m, "Exponential").def(py::init<double>(), py::arg("gamma"));
  bind_schedule<sched::Constant>(m, "Constant")
      .def(py::init<double, int64_t>(), py::arg("factor"), py::arg("total_iters"));
  bind_schedule<sched::Linear>(m, "Linear")
      .def(py::init<double, double, int64_t>(), py::arg("start_factor"), py::arg("end_factor"),
           py::arg("total_iters"));
  bind_schedule<sched::Polynomial>(m, "Polynomial")
      .def(py::init<int64_t, double>(), py::arg("total_iters"), py::arg("power"));
}
