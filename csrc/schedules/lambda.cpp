#include <steadystep/schedules/lambda.h>

#include <c10/util/Exception.h>

namespace steadystep::schedules {

namespace {
std::vector<LrLambda> per_group(std::vector<LrLambda> lambdas, size_t groups, const char* name) {
  if (lambdas.size() == 1 && groups != 1) {
    return std::vector<LrLambda>(groups, lambdas[0]);
  }
  TORCH_CHECK_VALUE(lambdas.size() == groups, name, ": expected ", groups,
                    " lr_lambdas (one per param group), but got ", lambdas.size());
  for (size_t i = 0; i < lambdas.size(); ++i) {
    TORCH_CHECK_VALUE(static_cast<bool>(lambdas[i]), name, ": lr_lambda[", i, "] is empty");
  }
  return lambdas;
}
}  // namespace

Lambda::Lambda(std::vector<LrLambda> lambdas, size_t groups)
    : lambdas_(per_group(std::move(lambdas), groups, "LambdaLR")) {}

std::vector<double> Lambda::get_lr(const StepContext& ctx) const {
  std::vector<double> out(ctx.base_lrs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = ctx.base_lrs[i] * lambdas_[i](ctx.last_epoch);
  }
  return out;
}

Multiplicative::Multiplicative(std::vector<LrLambda> lambdas, size_t groups)
    : lambdas_(per_group(std::move(lambdas), groups, "MultiplicativeLR")) {}

std::vector<double> Multiplicative::get_lr(const StepContext& ctx) const {
  if (ctx.is_initial) {
    return ctx.lrs;
  }
  std::vector<double> out(ctx.lrs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = ctx.lrs[i] * lambdas_[i](ctx.last_epoch);
  }
  return out;
}

}  // namespace steadystep::schedules
