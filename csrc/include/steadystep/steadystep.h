#pragma once

/// steadystep: learning-rate schedules and a fused, sync-free gradient-clip + optimizer step
/// for LibTorch. Include this header and link `steadystep::steadystep`.

#include <steadystep/clip_grad.h>
#include <steadystep/guard.h>
#include <steadystep/lr_scheduler.h>
#include <steadystep/optim.h>
#include <steadystep/version.h>
