// What the process backend accepts at submit, and how it says no: noexcept functions, results
// without a default constructor, initializers named in a config file, and callables it cannot
// send.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include <cfx/cfx.hpp>
#include <nlohmann/json.hpp>

namespace {

int twice(int x) noexcept {
  return 2 * x;
}
CFX_TASK(twice);

/// No default constructor: from_json returns it (nlohmann's adl_serializer form).
struct Reading {
  explicit Reading(double v) : value(v) {}
  double value;
};

Reading read_sensor(double v) {
  return Reading(v);
}
CFX_TASK(read_sensor);

std::string init_state = "uninitialized";
void set_up(std::string state, int times) {
  init_state.clear();
  for (int i = 0; i < times; ++i) init_state += state;
}
CFX_TASK(set_up);
std::string get_state() {
  return init_state;
}
CFX_TASK(get_state);

int unregistered_square(int x) {
  return x * x;
}

std::string error_of(auto&& submit) {
  try {
    submit();
  } catch (const cfx::Error& e) {
    return e.what();
  }
  return "<no cfx::Error>";
}

}  // namespace

template <>
struct nlohmann::adl_serializer<Reading> {
  static Reading from_json(const json& j) { return Reading(j.at("value").get<double>()); }
  static void to_json(json& j, const Reading& r) { j = json{{"value", r.value}}; }
};

TEST_SUITE("process submit") {
  TEST_CASE("a noexcept function runs in a worker") {
    cfx::ProcessPoolExecutor pool({.max_workers = 1});
    CHECK(pool.submit(twice, 21).result() == 42);
  }

  TEST_CASE("a result without a default constructor comes back") {
    cfx::ProcessPoolExecutor pool({.max_workers = 1});
    CHECK(pool.submit(read_sensor, 1.5).result().value == 1.5);
  }

  TEST_CASE("an unregistered function or a lambda is refused at submit, saying how to register") {
    cfx::ProcessPoolExecutor pool({.max_workers = 1});
    std::string fn = error_of([&] { (void)pool.submit(unregistered_square, 3); });
    CHECK(fn.find("CFX_TASK") != std::string::npos);
    CHECK(fn.find("unregistered_square") != std::string::npos);  // names the function
    std::string lambda = error_of([&] { (void)pool.submit([] { return 1; }); });
    CHECK(lambda.find("lambdas") != std::string::npos);
    // A lambda taking a move-only argument compiles for every executor; a process pool
    // refuses it at submit.
    CHECK_THROWS_AS(
        (void)pool.submit([](std::unique_ptr<int> p) { return *p; }, std::make_unique<int>(1)),
        cfx::Error);
  }

  TEST_CASE("an initializer named in the configuration, with JSON arguments") {
    nlohmann::json init = {{"task", "set_up"}, {"args", {"ab", 2}}};
    for (const char* backend : {"thread", "process"}) {
      CAPTURE(backend);
      auto ex =
          cfx::make_executor({{"backend", backend}, {"max_workers", 1}, {"initializer", init}});
      CHECK(ex->submit(get_state).result() == "abab");
      init_state = "uninitialized";
    }
  }

  TEST_CASE("a bad initializer in the configuration is a ConfigError naming it") {
    auto error = [](const nlohmann::json& init) -> std::string {
      try {
        (void)cfx::make_executor({{"backend", "process"}, {"initializer", init}});
      } catch (const cfx::ConfigError& e) {
        return e.what();
      }
      return "<no ConfigError>";
    };
    CHECK(error({{"task", "no_such_task"}}).find("no_such_task") != std::string::npos);
    CHECK(error({{"task", "set_up"}, {"args", {"ab"}}}).find("2 value") != std::string::npos);
    CHECK(error({{"task", "set_up"}, {"args", {1, 2}}}).find("argument 1") != std::string::npos);
    CHECK(error("set_up").find("initializer") != std::string::npos);
    CHECK(error({{"task", "set_up"}, {"arguments", {}}}).find("initializer") != std::string::npos);
  }

}  // TEST_SUITE
