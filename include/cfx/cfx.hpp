// cfx: Python's concurrent.futures for C++20. One include for everything.
#pragma once

#include "cfx/config.hpp"
#include "cfx/errors.hpp"
#include "cfx/executor.hpp"
#include "cfx/future.hpp"
#include "cfx/mpi_pool.hpp"
#include "cfx/pipe.hpp"
#include "cfx/process.hpp"
#include "cfx/process_pool.hpp"
#include "cfx/queue.hpp"
#include "cfx/shared.hpp"
#include "cfx/shared_dict.hpp"
#include "cfx/sync.hpp"
#include "cfx/task.hpp"
#include "cfx/thread_pool.hpp"
#include "cfx/wait.hpp"
