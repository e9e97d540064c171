// The CPU byte counter (counter.h).
#include "counter.h"

#include <c10/core/CPUAllocator.h>

#include <malloc.h>

#include <atomic>
#include <mutex>

namespace memprof {

namespace {

std::atomic<int64_t> live{0};
std::atomic<int64_t> peak{0};
c10::Allocator* inner = nullptr;
c10::DeleterFnPtr inner_deleter = nullptr;
std::mutex install_mu;

inline void count_up(int64_t n) {
  const int64_t now = live.fetch_add(n, std::memory_order_relaxed) + n;
  int64_t high = peak.load(std::memory_order_relaxed);
  while (now > high && !peak.compare_exchange_weak(high, now, std::memory_order_relaxed)) {
  }
}

class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr dp = inner->allocate(n);
    void* data = dp.get();
    // Only the C heap's allocations, with the data as context, are ours to count.
    if (data == nullptr || dp.get_context() != data || !dp.compare_exchange_deleter(inner_deleter, &counted_delete))
      return dp;
    count_up(static_cast<int64_t>(malloc_usable_size(data)));
    return dp;
  }
  c10::DeleterFnPtr raw_deleter() const override { return &counted_delete; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    inner->copy_data(dest, src, count);
  }
};

CountingAllocator counting;  // never destroyed while storages it counted may live: static

}  // namespace

void counted_delete(void* data) {
  if (data != nullptr) live.fetch_sub(static_cast<int64_t>(malloc_usable_size(data)), std::memory_order_relaxed);
  inner_deleter(data);
}

c10::DeleterFnPtr counted_inner_deleter() { return inner_deleter; }

bool install_cpu_counter() {
  std::lock_guard<std::mutex> g(install_mu);
  c10::Allocator* current = c10::GetCPUAllocator();
  if (current == &counting) return true;
  if (inner == nullptr) {
    // The allocator wrapped must be the default one (the C heap's, whose frees take the data).
    if (current != c10::GetDefaultCPUAllocator()) return false;
    c10::DataPtr probe = current->allocate(64);
    if (probe.get() == nullptr || probe.get_context() != probe.get()) return false;
    inner_deleter = probe.get_deleter();
    inner = current;
  } else if (current != inner) {
    return false;  // another allocator came since: not ours to wrap
  }
  c10::SetCPUAllocator(&counting, /*priority=*/1);
  return c10::GetCPUAllocator() == &counting;
}

void uninstall_cpu_counter() {
  std::lock_guard<std::mutex> g(install_mu);
  if (inner != nullptr && c10::GetCPUAllocator() == &counting) c10::SetCPUAllocator(inner, /*priority=*/1);
}

bool cpu_counter_installed() { return c10::GetCPUAllocator() == &counting; }

std::pair<int64_t, int64_t> read_cpu_counter(bool restart_peak) {
  const int64_t now = live.load(std::memory_order_relaxed);
  const int64_t high = restart_peak ? peak.exchange(now, std::memory_order_relaxed) : peak.load(std::memory_order_relaxed);
  return {now, high > now ? high : now};
}

}  // namespace memprof
