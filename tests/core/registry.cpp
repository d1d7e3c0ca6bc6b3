// The task registry: registration macros, lookups, and the type-erased codec and call that
// CFX_TASK stores in each entry.
#include <doctest/doctest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <cfx/task.hpp>
#include <nlohmann/json.hpp>

#include "core/registry_header.hpp"

namespace registry_test {
int from_cpp(int x);
int one(int x);
int two(int x);

int scaled(int x, double factor) noexcept {
  return static_cast<int>(x * factor);
}
std::string greet(const std::string& name) {
  return "hello " + name;
}
void nothing(int) {}
int unregistered(int x) {
  return x;
}
}  // namespace registry_test

CFX_TASK_AS(&registry_test::scaled, "registry_test::scaled");
CFX_TASK_AS(&registry_test::greet, "registry_test::greet");
CFX_TASK_AS(&registry_test::nothing, "registry_test::nothing");

namespace {

using cfx::detail::find_task;
using cfx::detail::find_task_at;
using cfx::detail::Reader;
using cfx::detail::TaskEntry;
using cfx::detail::Writer;

const void* address_of(auto fn) {
  return reinterpret_cast<const void*>(fn);
}

/// Calls `task` on the argument tuple `args` through its entry, as a worker would, and
/// decodes the result as the parent would.
template <class R, class Tuple>
R call_through_entry(const TaskEntry& task, const Tuple& args) {
  std::vector<char> encoded = cfx::detail::encode_args(task, &args, 1);
  Reader in(encoded.data(), encoded.size());
  std::vector<char> out;
  Writer result(out);
  task.run(task, in, result);
  Reader back(out.data(), out.size());
  std::optional<R> value;
  task.decode_result(task, back, &value);
  REQUIRE(value.has_value());
  return std::move(*value);
}

}  // namespace

TEST_SUITE("core") {
  TEST_CASE("registry: a header and a .cpp may register on the same line number") {
    const TaskEntry* in_header = find_task("registry_test::from_header");
    const TaskEntry* in_cpp = find_task("registry_test::from_cpp");
    REQUIRE(in_header);
    REQUIRE(in_cpp);
    CHECK(in_header->address == address_of(&registry_test::from_header));
    CHECK(in_cpp->address == address_of(&registry_test::from_cpp));
  }

  TEST_CASE("registry: two registrations on one line") {
    REQUIRE(find_task("registry_test::one"));
    REQUIRE(find_task("registry_test::two"));
    CHECK(find_task_at(address_of(&registry_test::one))->name == "registry_test::one");
    CHECK(find_task_at(address_of(&registry_test::two))->name == "registry_test::two");
  }

  TEST_CASE("registry: lookups by name and by address agree") {
    const TaskEntry* by_name = find_task("registry_test::greet");
    REQUIRE(by_name);
    CHECK(find_task_at(address_of(&registry_test::greet)) == by_name);
    CHECK(find_task("registry_test::no_such_task") == nullptr);
    CHECK(find_task_at(address_of(&registry_test::unregistered)) == nullptr);
  }

  TEST_CASE("registry: a noexcept function registers and is found from its pointer") {
    const TaskEntry& task = cfx::detail::registered_task(&registry_test::scaled);
    CHECK(task.name == "registry_test::scaled");
    CHECK(*task.args_type == typeid(std::tuple<int, double>));
    CHECK(*task.result_type == typeid(int));
  }

  TEST_CASE("registry: an unregistered function is a cfx::Error saying how to register it") {
    try {
      (void)cfx::detail::registered_task(&registry_test::unregistered);
      FAIL("expected cfx::Error");
    } catch (const cfx::Error& e) {
      CHECK(std::string(e.what()).find("CFX_TASK") != std::string::npos);
    }
  }

  TEST_CASE("registry: the entry's codec and call round-trip, with no process involved") {
    const TaskEntry& scaled = cfx::detail::registered_task(&registry_test::scaled);
    CHECK(call_through_entry<int>(scaled, std::tuple<int, double>(10, 2.5)) == 25);
    const TaskEntry& greet = cfx::detail::registered_task(&registry_test::greet);
    CHECK(call_through_entry<std::string>(greet, std::tuple<std::string>("cfx")) == "hello cfx");
  }

  TEST_CASE("registry: a void task writes no result bytes") {
    const TaskEntry& task = cfx::detail::registered_task(&registry_test::nothing);
    std::tuple<int> args(1);
    std::vector<char> encoded = cfx::detail::encode_args(task, &args, 1);
    Reader in(encoded.data(), encoded.size());
    std::vector<char> out;
    Writer result(out);
    task.run(task, in, result);
    CHECK(out.empty());
  }

  TEST_CASE("registry: arguments from JSON, as a config file's initializer gives them") {
    const TaskEntry& task = cfx::detail::registered_task(&registry_test::scaled);
    std::vector<char> out;
    Writer w(out);
    nlohmann::json args = {4, 0.5};
    task.encode_json_args(task, w, &args);
    Reader in(out.data(), out.size());
    std::vector<char> result_bytes;
    Writer result(result_bytes);
    task.run(task, in, result);
    Reader back(result_bytes.data(), result_bytes.size());
    CHECK(back.get<int>() == 2);

    nlohmann::json too_few = {4};
    CHECK_THROWS_AS(task.encode_json_args(task, w, &too_few), cfx::ConfigError);
    nlohmann::json wrong_type = {"four", 0.5};
    CHECK_THROWS_AS(task.encode_json_args(task, w, &wrong_type), cfx::ConfigError);
  }

}  // TEST_SUITE
