// The CPU byte counter: the bytes the CPU allocator holds for tensors, and their highest, counted
// at every allocation and free, detail or not (the watch mode's exact running peak on CPU).
//
// The CPU allocator is wrapped (c10::SetCPUAllocator): each allocation of the allocator it wraps
// gets a deleter that counts the free, then frees with that allocator's deleter; the context
// stays the data pointer, as copy-on-write clones require. Sizes are the C heap's usable sizes
// (malloc_usable_size), counted the same way at both ends: what is read from it is a difference
// (bytes made since a detailed step), never a total. About 20 ns an allocation.
//
// Known limitations: storages of other allocators (pinned, shared memory) are not counted; one
// made before the counter was installed is not counted when it is freed either. Once the counter
// has been installed, the CPU allocator's slot has priority 1: a library setting its own CPU
// allocator afterwards at priority 0 (the default) is refused by c10, as it would be by any
// allocator set at a higher priority.
#pragma once

#include <c10/core/Allocator.h>

#include <cstdint>

namespace memprof {

// Wrap the CPU allocator, once per process; true when the counter counts (it does not where
// the allocator is not the C heap's, or a higher-priority one was set).
bool install_cpu_counter();
// Put the wrapped allocator back (storages counted keep their deleter: their frees still count).
void uninstall_cpu_counter();
bool cpu_counter_installed();

// (live, peak) now; the peak then restarts at live (peak since the last look).
std::pair<int64_t, int64_t> read_cpu_counter(bool restart_peak);

// The deleter the counter gives its allocations, and the one of the allocator it wraps
// (nullptr before it is installed): the ledger marks storages of either.
void counted_delete(void* data);
c10::DeleterFnPtr counted_inner_deleter();

}  // namespace memprof
