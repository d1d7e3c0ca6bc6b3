// make_executor / make_executor_from_file: every key, every kind of bad input, and the
// environment overrides.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <cfx/cfx.hpp>
#include <nlohmann/json.hpp>

namespace {

using nlohmann::json;

int square(int x) {
  return x * x;
}
CFX_TASK(square);

/// Sets an environment variable for the scope.
struct ScopedEnv {
  std::string name;
  ScopedEnv(const char* n, const char* value) : name(n) { ::setenv(n, value, 1); }
  ~ScopedEnv() { ::unsetenv(name.c_str()); }
};

/// A file with `text`, removed at the end of the scope.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/cfx-config-XXXXXX";
    int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::close(fd);
    path = name;
    std::ofstream(path) << text;
  }
  ~TempFile() { std::remove(path.c_str()); }
};

std::string config_error(const json& config) {
  try {
    (void)cfx::make_executor(config);
  } catch (const cfx::ConfigError& e) {
    return e.what();
  }
  return "<no ConfigError>";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("config") {
  TEST_CASE("an empty configuration is a default thread pool") {
    auto ex = cfx::make_executor(json::object());
    CHECK(ex->backend() == "thread");
    CHECK(ex->max_workers() >= 5);  // min(32, cores + 4)
    CHECK(ex->submit(square, 7).result() == 49);
  }

  TEST_CASE("every key of both backends is accepted") {
    auto threads = cfx::make_executor(
        {{"backend", "thread"}, {"max_workers", 3}, {"thread_name_prefix", "cfg"}});
    CHECK(threads->backend() == "thread");
    CHECK(threads->max_workers() == 3);
    auto procs = cfx::make_executor({{"backend", "process"},
                                     {"max_workers", 2},
                                     {"start_method", "spawn"},
                                     {"max_tasks_per_child", 10},
                                     {"task_timeout_s", 30},
                                     {"on_worker_crash", "break"}});
    CHECK(procs->backend() == "process");
    CHECK(procs->max_workers() == 2);
    CHECK(procs->submit(square, 9).result() == 81);
    CHECK(cfx::make_executor({{"backend", "process"}, {"task_timeout_s", nullptr}})->backend() ==
          "process");
  }

  TEST_CASE(
      "unknown keys, wrong types and bad values name the key, the value and what is allowed") {
    auto unknown = config_error({{"max_wrokers", 2}});
    CHECK(contains(unknown, "max_wrokers"));
    CHECK(contains(unknown, "max_workers"));  // the allowed keys are listed

    auto wrong_type = config_error({{"max_workers", "4"}});
    CHECK(contains(wrong_type, "max_workers"));
    CHECK(contains(wrong_type, "\"4\""));
    CHECK(contains(wrong_type, "integer"));

    CHECK(contains(config_error({{"max_workers", -1}}), "integer >= 0"));
    auto backend = config_error({{"backend", "gpu"}});
    CHECK(contains(backend, "backend"));
    CHECK(contains(backend, "gpu"));
    CHECK(contains(backend, "\"process\""));
    CHECK(contains(config_error({{"backend", "process"}, {"start_method", "vfork"}}), "\"fork\""));
    CHECK(contains(config_error({{"backend", "process"}, {"on_worker_crash", "ignore"}}),
                   "\"respawn\""));
    CHECK(contains(config_error({{"backend", "process"}, {"task_timeout_s", -1}}), "> 0"));
    CHECK(contains(config_error({{"backend", "process"}, {"task_timeout_s", "30"}}),
                   "task_timeout_s"));
    CHECK(contains(config_error({{"thread_name_prefix", 5}}), "a string"));
    CHECK(contains(config_error({{"backend", "process"}, {"thread_name_prefix", "x"}}),
                   "applies only to backend 'thread'"));
    CHECK(contains(config_error({{"start_method", "fork"}}), "applies only to backend 'process'"));
    CHECK(contains(config_error(json::array({1, 2})), "JSON object"));
  }

  TEST_CASE("CFX_BACKEND and CFX_MAX_WORKERS override the configuration") {
    {
      ScopedEnv backend("CFX_BACKEND", "process");
      ScopedEnv workers("CFX_MAX_WORKERS", "1");
      auto ex = cfx::make_executor({{"backend", "thread"}, {"max_workers", 4}});
      CHECK(ex->backend() == "process");
      CHECK(ex->max_workers() == 1);
    }
    {
      ScopedEnv backend("CFX_BACKEND", "thread");
      auto ex = cfx::make_executor({{"backend", "process"}, {"max_tasks_per_child", 5}});
      CHECK(ex->backend() == "thread");  // the process-only key is dropped, not an error
      // A key that no backend reads is still an error, whatever CFX_BACKEND says.
      CHECK(contains(config_error({{"backend", "process"}, {"task_timout_s", 5}}),
                     "unknown config key 'task_timout_s'"));
      // Without the override, a key of the other backend is an error (docs/config.md).
    }
    CHECK(contains(config_error({{"backend", "thread"}, {"task_timeout_s", 5}}),
                   "applies only to backend 'process'"));
    {
      ScopedEnv workers("CFX_MAX_WORKERS", "many");
      auto e = config_error(json::object());
      CHECK(contains(e, "CFX_MAX_WORKERS"));
      CHECK(contains(e, "many"));
    }
    {
      ScopedEnv backend("CFX_BACKEND", "quantum");
      CHECK(contains(config_error(json::object()), "quantum"));
    }
  }

  TEST_CASE("config files: read, missing, unparsable with its line") {
    TempFile good(R"({"backend": "thread", "max_workers": 2})");
    CHECK(cfx::make_executor_from_file(good.path)->max_workers() == 2);

    try {
      (void)cfx::make_executor_from_file("/nonexistent/pool.json");
      FAIL("expected ConfigError");
    } catch (const cfx::ConfigError& e) {
      CHECK(contains(e.what(), "/nonexistent/pool.json"));
    }

    TempFile broken("{\n  \"backend\": \"thread\",\n  \"max_workers\": ,\n}\n");
    try {
      (void)cfx::make_executor_from_file(broken.path);
      FAIL("expected ConfigError");
    } catch (const cfx::ConfigError& e) {
      CHECK(contains(e.what(), broken.path + ":3"));
    }

    TempFile bad_value(R"({"backend": "thread", "max_workers": "two"})");
    try {
      (void)cfx::make_executor_from_file(bad_value.path);
      FAIL("expected ConfigError");
    } catch (const cfx::ConfigError& e) {
      CHECK(contains(e.what(), bad_value.path));
      CHECK(contains(e.what(), "max_workers"));
    }
  }

}  // TEST_SUITE
