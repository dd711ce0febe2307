// bmojo: train, evaluate, inspect and benchmark B'MOJO-family models. Every command lives in its own file
// (tools/command.hpp lists them); this file only dispatches and checks that the output was delivered.
#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "command.hpp"
#include "core/error.hpp"
#include "core/runtime.hpp"
#include "train/data_parallel.hpp"

namespace {

// Output that did not reach its destination (a full disk, a closed pipe, /dev/full) is an error: the
// command's result was not delivered.
int finish_output(int code) {
  std::cout.flush();
  const bool cout_ok = static_cast<bool>(std::cout);
  errno = 0;
  const bool stdout_ok = std::fflush(stdout) == 0 && std::ferror(stdout) == 0;
  if (cout_ok && stdout_ok) return code;
  std::fprintf(stderr, "bmojo: error: writing to standard output failed%s%s\n", errno ? ": " : "",
               errno ? std::strerror(errno) : "");
  return code != 0 ? code : 1;
}

int dispatch(int argc, char** argv);

}  // namespace

int main(int argc, char** argv) {
  bmojo::ensure_native_blas_kernels(argv);
  // A file-size limit (ulimit -f) makes writes fail with EFBIG, reported like a full disk, instead of
  // killing the process half-way through a write.
  std::signal(SIGXFSZ, SIG_IGN);
  return finish_output(dispatch(argc, argv));
}

namespace {

int dispatch(int argc, char** argv) {
  using namespace bmojo;
  CLI::App app{"bmojo: train, evaluate and run B'MOJO-family models (Transformer, Mamba, hybrids)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("bmojo ") + BMOJO_VERSION);
  std::vector<Command> commands = {train_command(app), eval_command(app)};
  for (Command& c : data_commands(app)) commands.push_back(std::move(c));
  for (Command c : {lengthgen_command(app), info_command(app), bench_command(app), generate_command(app),
                    infer_bench_command(app), parity_dump_command(app), serve_command(app)})
    commands.push_back(std::move(c));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const Command& c : commands)
      if (*c.cli) return c.run();
  } catch (const bmojo::Error& e) {
    std::fprintf(stderr, "bmojo: error: %s\n", e.what());
    bmojo::abort_if_distributed(1);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bmojo: error: %s\n", e.what());
    bmojo::abort_if_distributed(1);
    return 1;
  }
  return 0;
}

}  // namespace
