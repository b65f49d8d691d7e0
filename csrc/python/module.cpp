// steadystep._C: the C++ schedule math, bound for the Python schedulers. Binds, no logic.

#include <steadystep/schedules/cosine_annealing.h>
#include <steadystep/schedules/cosine_warm_restarts.h>
#include <steadystep/schedules/cyclic.h>
#include <steadystep/schedules/extras.h>
#include <steadystep/schedules/lambda.h>
#include <steadystep/schedules/one_cycle.h>
#include <steadystep/schedules/plateau.h>
#include <steadystep/schedules/schedule.h>
#include <steadystep/schedules/step.h>
#include <steadystep/schedules/swa.h>
#include <steadystep/schedules/warmup.h>
#include <steadystep/version.h>

#include <c10/util/Exception.h>
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include "ops/optim_checks.h"

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
  // Step sizes, milestones and total_iters are doubles: PyTorch's Python classes take any real
  // number for them (5.0 as 5, 2.5 with Python's float arithmetic).
  bind_schedule<sched::Step>(m, "Step").def(py::init<double, double>(), py::arg("step_size"),
                                            py::arg("gamma") = 0.1);
  bind_schedule<sched::MultiStep>(m, "MultiStep")
      .def(py::init<std::vector<double>, double>(), py::arg("milestones"), py::arg("gamma") = 0.1);
  bind_schedule<sched::Exponential>(m, "Exponential").def(py::init<double>(), py::arg("gamma"));
  bind_schedule<sched::Constant>(m, "Constant")
      .def(py::init<double, double>(), py::arg("factor"), py::arg("total_iters"));
  bind_schedule<sched::Linear>(m, "Linear")
      .def(py::init<double, double, double>(), py::arg("start_factor"), py::arg("end_factor"),
           py::arg("total_iters"));
  bind_schedule<sched::Polynomial>(m, "Polynomial")
      .def(py::init<double, double>(), py::arg("total_iters"), py::arg("power"));

  bind_schedule<sched::SWA>(m, "SWA").def(py::init<std::vector<double>, int64_t, std::string>(),
                                          py::arg("swa_lrs"), py::arg("anneal_epochs"),
                                          py::arg("anneal_strategy"));
  bind_schedule<sched::WarmupCosine>(m, "WarmupCosine")
      .def(py::init<int64_t, int64_t, double, double>(), py::arg("warmup_steps"),
           py::arg("total_steps"), py::arg("warmup_start_factor"), py::arg("eta_min"));
  bind_schedule<sched::WarmupStableDecay>(m, "WarmupStableDecay")
      .def(py::init<int64_t, int64_t, int64_t, double, double, std::string>(),
           py::arg("warmup_steps"), py::arg("stable_steps"), py::arg("decay_steps"),
           py::arg("warmup_start_factor"), py::arg("min_lr_ratio"), py::arg("decay_type"));
  bind_schedule<sched::InverseSqrt>(m, "InverseSqrt")
      .def(py::init<int64_t, std::optional<int64_t>>(), py::arg("warmup_steps"),
           py::arg("timescale"));
  bind_schedule<sched::ExponentialDecay>(m, "ExponentialDecay")
      .def(py::init<double, int64_t, bool, double>(), py::arg("decay_rate"), py::arg("decay_steps"),
           py::arg("staircase"), py::arg("min_lr"));
  bind_schedule<sched::Random>(m, "Random")
      .def(py::init<double, double, int64_t, bool, uint64_t>(), py::arg("min_lr"),
           py::arg("max_lr"), py::arg("period"), py::arg("log_uniform"), py::arg("seed"))
      .def("draw", &sched::Random::draw, py::arg("step"));
  m.def("clamp_lrs", &sched::clamp_lrs, py::arg("lrs"), py::arg("min_lr"), py::arg("max_lr"));
  m.def("check_bounds", &sched::check_bounds, py::arg("min_lr"), py::arg("max_lr"));

  py::class_<sched::WarmRestartsState>(m, "WarmRestartsState")
      .def(py::init<>())
      .def_readwrite("T_cur", &sched::WarmRestartsState::T_cur)
      .def_readwrite("T_i", &sched::WarmRestartsState::T_i)
      .def_readwrite("last_epoch", &sched::WarmRestartsState::last_epoch);
  py::class_<sched::CosineWarmRestarts>(m, "CosineWarmRestarts")
      .def(py::init<int64_t, int64_t, double>(), py::arg("T_0"), py::arg("T_mult"),
           py::arg("eta_min"))
      .def("initial_state", &sched::CosineWarmRestarts::initial_state, py::arg("last_epoch"))
      .def("advance", &sched::CosineWarmRestarts::advance, py::arg("state"), py::arg("epoch"))
      .def("lr", &sched::CosineWarmRestarts::lr, py::arg("state"), py::arg("base_lrs"));

  py::class_<sched::Cyclic>(m, "Cyclic")
      .def(py::init<std::vector<double>, std::vector<double>, double, double, std::string, double,
                    sched::ScaleFn, std::string, bool, std::vector<double>, std::vector<double>>(),
           py::arg("base_lrs"), py::arg("max_lrs"), py::arg("total_size"), py::arg("step_ratio"),
           py::arg("mode"), py::arg("gamma"), py::arg("scale_fn"), py::arg("scale_mode"),
           py::arg("cycle_momentum"), py::arg("base_momentums"), py::arg("max_momentums"))
      .def("lrs", &sched::Cyclic::lrs, py::arg("last_epoch"))
      .def("momentums", &sched::Cyclic::momentums, py::arg("last_epoch"));

  m.def("cycle_shape", &sched::Cyclic::cycle_shape, py::arg("step_size_up"),
        py::arg("step_size_down"));

  py::class_<sched::OneCycle>(m, "OneCycle")
      .def(py::init<int64_t, std::vector<double>, std::string>(), py::arg("total_steps"),
           py::arg("end_steps"), py::arg("anneal_strategy"))
      .def(
          "at",
          [](const sched::OneCycle& self, int64_t step, double initial_lr, double max_lr,
             double min_lr, double max_momentum, double base_momentum) {
            return self.at(step, {initial_lr, max_lr, min_lr, max_momentum, base_momentum});
          },
          py::arg("step"), py::arg("initial_lr"), py::arg("max_lr"), py::arg("min_lr"),
          py::arg("max_momentum"), py::arg("base_momentum"));

  py::class_<sched::PlateauState>(m, "PlateauState")
      .def(py::init<>())
      .def_readwrite("best", &sched::PlateauState::best)
      .def_readwrite("num_bad_epochs", &sched::PlateauState::num_bad_epochs)
      .def_readwrite("cooldown_counter", &sched::PlateauState::cooldown_counter)
      .def_readwrite("last_epoch", &sched::PlateauState::last_epoch);
  py::class_<sched::Plateau>(m, "Plateau")
      .def(py::init<std::string, double, int64_t, double, std::string, int64_t, std::vector<double>,
                    double>(),
           py::arg("mode"), py::arg("factor"), py::arg("patience"), py::arg("threshold"),
           py::arg("threshold_mode"), py::arg("cooldown"), py::arg("min_lrs"), py::arg("eps"))
      .def("initial_state", &sched::Plateau::initial_state)
      .def("is_better", &sched::Plateau::is_better, py::arg("a"), py::arg("best"))
      .def("step", &sched::Plateau::step, py::arg("state"), py::arg("metric"), py::arg("epoch"),
           py::arg("lrs"))
      .def("observe", &sched::Plateau::observe, py::arg("state"), py::arg("metric"),
           py::arg("epoch"))
      .def("reduce", &sched::Plateau::reduce, py::arg("lrs"))
      .def("rest", &sched::Plateau::rest, py::arg("state"));

  // Argument checks of the fused optimizers (the same the C++ classes and the ops run).
  m.def(
      "check_adam",
      [](double lr, double beta1, double beta2, double eps, double weight_decay) {
        steadystep::check_lr(lr);
        steadystep::check_adam_hyper({lr, beta1, beta2, eps, weight_decay, false, false, false});
      },
      py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"));
  m.def(
      "check_sgd",
      [](double lr, double momentum, double dampening, double weight_decay, bool nesterov) {
        steadystep::check_lr(lr);
        steadystep::check_sgd_hyper({lr, momentum, dampening, weight_decay, nesterov, false});
      },
      py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"),
      py::arg("nesterov"));
  m.def("check_clip_settings", &steadystep::check_clip_settings, py::arg("max_grad_norm"),
        py::arg("norm_type"));
}
