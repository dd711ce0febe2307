#include <gtest/gtest.h>

#include "core/runtime.hpp"

int main(int argc, char** argv) {
  bmojo::ensure_native_blas_kernels(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
