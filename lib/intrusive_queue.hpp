// A FIFO of tasks linked through their own `next` field (no allocation per task). Internal;
// not thread-safe: the executors guard it with their queue mutex.
#pragma once

#include <cstddef>

namespace cfx::detail {

template <class T>
class IntrusiveQueue {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }

  void push_back(T* t) noexcept {
    t->next = nullptr;
    if (tail_)
      tail_->next = t;
    else
      head_ = t;
    tail_ = t;
    ++size_;
  }
  void push_front(T* t) noexcept {
    t->next = head_;
    head_ = t;
    if (!tail_) tail_ = t;
    ++size_;
  }
  /// Call only when not empty.
  T* pop_front() noexcept {
    T* t = head_;
    head_ = t->next;
    if (!head_) tail_ = nullptr;
    --size_;
    return t;
  }
  /// Empties the queue; returns its tasks as a list linked through `next`.
  T* take_all() noexcept {
    T* all = head_;
    head_ = tail_ = nullptr;
    size_ = 0;
    return all;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace cfx::detail
