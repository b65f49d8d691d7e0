#pragma once
// Stand-in for gloo's header (see ../../gloo_compat.cmake): ProcessGroupGloo.hpp includes it and
// uses nothing from it.
