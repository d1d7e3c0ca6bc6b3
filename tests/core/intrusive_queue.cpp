// lib/intrusive_queue.hpp: the executors' FIFO of tasks linked through their `next` field.
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "lib/intrusive_queue.hpp"

namespace {

struct Node {
  int id = 0;
  Node* next = nullptr;
};

using Queue = cfx::detail::IntrusiveQueue<Node>;

/// Pops everything, in order, checking size() and empty() at each step.
std::vector<int> drain(Queue& q) {
  std::vector<int> ids;
  while (!q.empty()) {
    auto before = q.size();
    ids.push_back(q.pop_front()->id);
    CHECK(q.size() == before - 1);
  }
  CHECK(q.size() == 0);
  return ids;
}

/// The ids along a chain linked through `next`, up to `limit` nodes (to stop on a cycle).
std::vector<int> chain(Node* n, std::size_t limit = 1000) {
  std::vector<int> ids;
  for (; n && ids.size() < limit; n = n->next) ids.push_back(n->id);
  return ids;
}

/// A poisoned link: a node's stale `next` must never show through.
Node* const stale = reinterpret_cast<Node*>(std::uintptr_t{0x10});

}  // namespace

TEST_SUITE("core") {
  TEST_CASE("intrusive queue: a new queue is empty") {
    Queue q;
    CHECK(q.empty());
    CHECK(q.size() == 0);
    CHECK(q.take_all() == nullptr);
    CHECK(q.empty());
    CHECK(q.size() == 0);
  }

  TEST_CASE("intrusive queue: push_back and pop_front are FIFO") {
    std::array<Node, 6> n{};
    Queue q;
    for (int i = 0; i < 6; ++i) {
      n[i].id = i;
      q.push_back(&n[i]);
      CHECK(!q.empty());
      CHECK(q.size() == static_cast<std::size_t>(i + 1));
    }
    for (int i = 0; i < 6; ++i) {
      Node* t = q.pop_front();
      CHECK(t == &n[i]);
      CHECK(q.size() == static_cast<std::size_t>(5 - i));
      CHECK(q.empty() == (i == 5));
    }
  }

  TEST_CASE("intrusive queue: push_back terminates the chain even over a stale link") {
    Node a{1, stale}, b{2, stale};
    Queue q;
    q.push_back(&a);
    CHECK(a.next == nullptr);
    q.push_back(&b);
    CHECK(a.next == &b);
    CHECK(b.next == nullptr);
    CHECK(drain(q) == std::vector<int>{1, 2});
  }

  TEST_CASE("intrusive queue: push_front puts a task at the head") {
    Node a{1}, b{2}, c{3}, d{4};
    Queue q;
    q.push_back(&a);
    q.push_back(&b);
    q.push_front(&c);
    CHECK(q.size() == 3);
    q.push_back(&d);  // the tail is still b
    CHECK(q.size() == 4);
    CHECK(drain(q) == std::vector<int>{3, 1, 2, 4});
  }

  TEST_CASE("intrusive queue: push_front on an empty queue sets the tail too") {
    Node a{1, stale}, b{2, stale}, c{3};
    Queue q;
    q.push_front(&a);
    CHECK(q.size() == 1);
    CHECK(!q.empty());
    CHECK(a.next == nullptr);  // the end of the chain, not the stale link
    q.push_back(&b);
    q.push_front(&c);
    CHECK(q.size() == 3);
    CHECK(drain(q) == std::vector<int>{3, 1, 2});
  }

  TEST_CASE("intrusive queue: popping the last task resets the tail") {
    Node a{1}, b{2}, c{3}, d{4};
    Queue q;
    q.push_back(&a);
    CHECK(q.pop_front() == &a);
    CHECK(q.empty());
    q.push_back(&b);  // must not link through the popped a
    q.push_back(&c);
    CHECK(q.size() == 2);
    CHECK(q.pop_front() == &b);
    CHECK(q.pop_front() == &c);
    CHECK(q.empty());
    q.push_front(&d);
    q.push_back(&a);
    CHECK(drain(q) == std::vector<int>{4, 1});
  }

  TEST_CASE("intrusive queue: a popped task can be pushed back in") {
    Node a{1}, b{2}, c{3};
    Queue q;
    q.push_back(&a);
    q.push_back(&b);
    q.push_back(&c);
    Node* t = q.pop_front();
    q.push_back(t);  // a to the back
    CHECK(q.size() == 3);
    Node* u = q.pop_front();
    q.push_front(u);  // b straight back to the front
    CHECK(drain(q) == std::vector<int>{2, 3, 1});
  }

  TEST_CASE("intrusive queue: take_all returns the chain in order and empties the queue") {
    std::array<Node, 5> n{};
    Queue q;
    for (int i = 0; i < 5; ++i) n[i] = Node{i, stale};
    q.push_back(&n[2]);
    q.push_back(&n[3]);
    q.push_front(&n[1]);
    q.push_back(&n[4]);
    q.push_front(&n[0]);
    CHECK(q.size() == 5);
    Node* all = q.take_all();
    CHECK(all == &n[0]);
    CHECK(chain(all) == std::vector<int>{0, 1, 2, 3, 4});
    CHECK(n[4].next == nullptr);
    CHECK(q.empty());
    CHECK(q.size() == 0);
    CHECK(q.take_all() == nullptr);

    // The queue is reusable, and does not link new tasks onto the taken chain.
    Node x{10}, y{11};
    q.push_back(&x);
    q.push_back(&y);
    CHECK(n[4].next == nullptr);
    CHECK(q.size() == 2);
    CHECK(chain(q.take_all()) == std::vector<int>{10, 11});
    q.push_front(&y);
    q.push_back(&x);
    CHECK(drain(q) == std::vector<int>{11, 10});
  }

  TEST_CASE("intrusive queue: take_all of one task") {
    Node a{7, stale};
    Queue q;
    q.push_back(&a);
    CHECK(chain(q.take_all()) == std::vector<int>{7});
    CHECK(q.empty());
  }

  TEST_CASE("intrusive queue: interleaved operations match a std::deque model") {
    constexpr int kNodes = 64;
    std::array<Node, kNodes> nodes{};
    for (int i = 0; i < kNodes; ++i) nodes[i].id = i;
    std::vector<Node*> free_nodes;
    for (auto& n : nodes) free_nodes.push_back(&n);

    Queue q;
    std::deque<Node*> model;
    std::uint32_t state = 2463534242u;  // xorshift32: deterministic
    auto rnd = [&] {
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      return state;
    };
    int takes = 0;
    for (int step = 0; step < 20000; ++step) {
      CAPTURE(step);
      unsigned op = rnd() % 100;
      if (op < 35 && !free_nodes.empty()) {
        Node* n = free_nodes.back();
        free_nodes.pop_back();
        n->next = stale;
        q.push_back(n);
        model.push_back(n);
      } else if (op < 55 && !free_nodes.empty()) {
        Node* n = free_nodes.back();
        free_nodes.pop_back();
        n->next = stale;
        q.push_front(n);
        model.push_front(n);
      } else if (op < 98) {
        if (model.empty()) continue;
        Node* n = q.pop_front();
        REQUIRE(n == model.front());
        model.pop_front();
        free_nodes.push_back(n);
      } else {
        Node* all = q.take_all();
        std::vector<Node*> got;
        for (Node* n = all; n && got.size() <= kNodes; n = n->next) got.push_back(n);
        REQUIRE(got == std::vector<Node*>(model.begin(), model.end()));
        for (Node* n : got) free_nodes.push_back(n);
        model.clear();
        ++takes;
      }
      REQUIRE(q.size() == model.size());
      REQUIRE(q.empty() == model.empty());
    }
    CHECK(takes > 0);
    std::vector<int> rest;
    for (Node* n : model) rest.push_back(n->id);
    CHECK(drain(q) == rest);
  }

  TEST_CASE("intrusive queue: operations are noexcept") {
    Queue q;
    Node n;
    static_assert(noexcept(q.push_back(&n)));
    static_assert(noexcept(q.push_front(&n)));
    static_assert(noexcept(q.pop_front()));
    static_assert(noexcept(q.take_all()));
    static_assert(noexcept(q.size()));
    static_assert(noexcept(q.empty()));
    CHECK(q.empty());
  }
}
