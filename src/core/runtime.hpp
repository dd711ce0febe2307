// Process start-up: make sure OpenBLAS runs its best kernels for this CPU whatever the caller's
// environment. OPENBLAS_CORETYPE is read once when the library loads, so a program that finds it set
// re-executes itself without it.
#pragma once
#include <string>

namespace bmojo {

// Call first thing in main(). Returns only in the process that will do the work.
void ensure_native_blas_kernels(char** argv);

// What the start-up did, for `bmojo info` (empty when the environment was already clean).
std::string blas_environment_note();

}  // namespace bmojo
