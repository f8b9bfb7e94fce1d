/* dptrain: data-parallel neural-network training with a custom training
 * loop, in C11. Include this one header for the whole public API:
 *
 *   core.h   status codes and per-thread error messages, tensors, RNG, BLAS threads
 *   data.h   datastores (image folders, IDX), split/shuffle/partition,
 *            minibatch queue with a preprocessing callback
 *   comm.h   communicators, collectives, dpt_spmd_run (the spmd block)
 *   net.h    networks from spec text or builder calls, forward/backward,
 *            learnables and state tables, model files
 *   loss.h   losses with their gradients, gplus weighted sums
 *   optim.h  SGDM and Adam over the flat parameter buffer
 *   train.h  the batteries-included step, loop (dpt_fit), evaluation,
 *            checkpoints, the progress queue (DataQueue/afterEach)
 *   gpu.h    CUDA devices and networks moved onto one
 *
 * Link with -ldptrain (pkg-config --cflags --libs dptrain, or CMake
 * find_package(dptrain) and target dptrain::dptrain). docs/custom-loop.md
 * walks through a whole training loop; docs/api/ is the reference.
 *
 * Conventions for every call: fallible calls return dpt_status (DPT_OK is 0)
 * and leave a message naming the file or argument in dpt_last_error() (per
 * thread); the library never prints and never exits. Objects from _new or
 * _open are freed by the matching _free, which accepts NULL. Collective
 * calls must be made by every worker of the communicator, in the same
 * order. */
#ifndef DPTRAIN_DPTRAIN_H
#define DPTRAIN_DPTRAIN_H

#include "dptrain/core.h"
#include "dptrain/data.h"
#include "dptrain/comm.h"
#include "dptrain/net.h"
#include "dptrain/loss.h"
#include "dptrain/optim.h"
#include "dptrain/train.h"
#include "dptrain/gpu.h"

/* The version of the library these headers belong to. */
#define DPTRAIN_VERSION_MAJOR 0
#define DPTRAIN_VERSION_MINOR 1
#define DPTRAIN_VERSION_PATCH 0

#endif
