// steadystep._C: the C++ schedule math, bound for the Python schedulers. Binds, no logic.

#include <steadystep/schedules/cosine_annealing.h>
#include <steadystep/schedules/schedule.h>
#include <steadystep/version.h>

#include <c10/util/Exception.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;
namespace sched = steadystep::schedules;

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

  py::class_<sched::CosineAnnealing>(m, "CosineAnnealing")
      .def(py::init<double, double>(), py::arg("T_max"), py::arg("eta_min") = 0.0)
      .def("get_lr", &sched::CosineAnnealing::get_lr)
      .def("closed_form_lr", &sched::CosineAnnealing::closed_form_lr);
}
