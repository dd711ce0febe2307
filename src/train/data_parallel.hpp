// Data-parallel training across processes (MPI, OpenMPI from Debian): every rank holds the whole model,
// takes its share of the global batch, and the gradient slab is averaged over the ranks in the training
// step's gradient hook (train/train_step.hpp) before clipping, so every rank takes the same optimizer step
// and the weights stay identical (checked by a periodic fingerprint comparison).
//
// Built in when CMake finds MPI (BMOJO_HAVE_MPI); otherwise, and when a process was not started by mpirun,
// the world is one process and nothing here talks to anyone.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace bmojo {

struct World {
  int rank = 0;
  int size = 1;
  bool distributed() const { return size > 1; }
};

// True when this build can run under MPI.
bool mpi_built_in();
// The world of this process: initialises MPI when it was started by mpirun (OMPI_COMM_WORLD_SIZE or
// PMI_SIZE set), else a world of one. Throws bmojo::Error when started by mpirun but MPI is not built in.
World init_world();
// Ends MPI (at normal exit).
void finalize_world();
// A rank that has waited longer than this in one collective (an all-reduce, a start-up check) decides the
// others are hung or gone: it says so on stderr and exits, and mpirun then ends every rank, so a hung rank
// never leaves the job waiting forever. 0 turns the watch off. Default 300 s.
void set_collective_timeout(double seconds);
// After an error on this rank, when MPI is running: brings every rank down (MPI_Abort), so a rank that
// fails never leaves the others waiting in a collective. Returns when MPI is not running.
void abort_if_distributed(int code);

// In place over the ranks: the mean of each element (the gradient slab), in fixed-size buckets.
void allreduce_mean(float* data, size_t n);
// The mean over the ranks of one value.
double allreduce_mean(double v);
// Throws bmojo::Error naming the first rank whose `value` differs from rank 0's ("config", "binary").
void check_same_on_every_rank(uint64_t value, const std::string& what);

// Seconds spent in allreduce_mean(float*) so far (this process).
double allreduce_seconds();

}  // namespace bmojo
