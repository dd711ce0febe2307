// One file per command: each registers its subcommand and its flags on the app and returns how to run it;
// bmojo_main.cpp only dispatches.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace bmojo {

struct Command {
  CLI::App* cli = nullptr;   // the subcommand (parsed when the user named it)
  std::function<int()> run;  // runs it with the parsed flags; throws bmojo::Error on bad input
};

Command train_command(CLI::App& app);               // train_cmd.cpp
Command eval_command(CLI::App& app);                // eval_cmd.cpp
Command info_command(CLI::App& app);                // info_cmd.cpp
Command bench_command(CLI::App& app);               // bench_cmd.cpp
Command generate_command(CLI::App& app);            // generate.cpp
Command infer_bench_command(CLI::App& app);         // infer_bench.cpp
Command parity_dump_command(CLI::App& app);         // parity_dump.cpp
Command lengthgen_command(CLI::App& app);           // lengthgen.cpp
Command serve_command(CLI::App& app);               // serve_cmd.cpp
std::vector<Command> data_commands(CLI::App& app);  // data_cmd.cpp: data tokenizer | encode | info

}  // namespace bmojo
