// The ledger's running sums, step boundaries, lingering candidates and module charges (ledger.h).
#include "ledger.h"

#include <algorithm>
#include <climits>

namespace memprof {

Ledger::~Ledger() {
  // Marked entries keep their ledger alive: only foreign ones (Python watches them) are left.
  for (auto& kv : live_entries) {
    if (!kv.second->marked) delete kv.second;
  }
}

bool Ledger::add_locked(Entry* e) {
  e->seq = ++seq;
  live_entries[e->key] = e;
  live += e->nbytes;
  cat[e->category] += e->nbytes;
  if (e->scaled) scaled_live += e->nbytes;
  rising = true;
  if (live > step_peak) {
    step_peak = live;
    if (live > peak) {
      peak = live;
      peak_seq = e->seq;
      peak_step = e->step;
      peak_cat = cat;
    }
    if (live <= peak_watch_at) return false;
    if (peak_watch_at == 0 && static_cast<double>(old_bytes) < peak_watch_share * static_cast<double>(live)) {
      // The step's first new high, and nothing old worth naming: disarmed until the next step
      // without a call (old storages only die within a step, and the watch fires only higher).
      peak_watch_at = INT64_MAX;
      return false;
    }
    return true;
  }
  return false;
}

void Ledger::remove_locked(Entry* e) {
  auto it = live_entries.find(e->key);
  if (it == live_entries.end() || it->second != e) return;
  live_entries.erase(it);
  const int64_t n = e->nbytes;
  if (rising) {
    rising = false;
    local_peaks.emplace_back(live, scaled_live);
  }
  live -= n;
  cat[e->category] -= n;
  if (e->scaled) scaled_live -= n;
  if (e->old) {
    old_bytes -= n;
    if (e->linger) linger_at[e->key] = static_cast<int64_t>(local_peaks.size());
  }
}

void Ledger::recategorise_locked(Entry* e, int category, int only_from_mask) {
  const int old = e->category;
  if (old == category || (only_from_mask && !(only_from_mask & (1 << old)))) return;
  const int64_t n = e->nbytes;
  cat[old] -= n;
  cat[category] += n;
  if (e->seq <= peak_seq) {  // alive now and created before the peak: it was part of the peak
    peak_cat[old] -= n;
    peak_cat[category] += n;
  }
  if (PERSISTENT_MASK & (1 << category)) {
    if (e->scaled) {
      e->scaled = false;
      scaled_live -= n;
    }
    if (e->old) {
      e->old = false;
      old_bytes -= n;
    }
  }
  e->category = static_cast<int8_t>(category);
}

void Ledger::release(intptr_t key) {
  Entry* e = nullptr;
  {
    std::lock_guard<SpinLock> g(mu);
    auto it = live_entries.find(key);
    if (it == live_entries.end() || it->second->marked) return;
    e = it->second;
    remove_locked(e);
  }
  delete e;
}

void Ledger::set_site(intptr_t key, int32_t site) {
  std::lock_guard<SpinLock> g(mu);
  auto it = live_entries.find(key);
  if (it != live_entries.end()) it->second->site = site;
}

int64_t Ledger::seq_of(intptr_t key) {
  std::lock_guard<SpinLock> g(mu);
  auto it = live_entries.find(key);
  return it == live_entries.end() ? -1 : it->second->seq;
}

std::optional<View> Ledger::view(intptr_t key) {
  std::lock_guard<SpinLock> g(mu);
  auto it = live_entries.find(key);
  if (it == live_entries.end()) return std::nullopt;
  return View(it->second);
}

std::vector<View> Ledger::views() {
  std::vector<View> out;
  {
    std::lock_guard<SpinLock> g(mu);
    out.reserve(live_entries.size());
    for (auto& kv : live_entries) out.emplace_back(kv.second);
  }
  std::sort(out.begin(), out.end(), [](const View& a, const View& b) { return a.seq < b.seq; });
  return out;
}

int64_t Ledger::count() {
  std::lock_guard<SpinLock> g(mu);
  return static_cast<int64_t>(live_entries.size());
}

std::vector<int64_t> Ledger::read_cat() {
  std::lock_guard<SpinLock> g(mu);
  return std::vector<int64_t>(cat.begin(), cat.end());
}

std::vector<int64_t> Ledger::read_peak_cat() {
  std::lock_guard<SpinLock> g(mu);
  return std::vector<int64_t>(peak_cat.begin(), peak_cat.end());
}

std::vector<std::pair<int64_t, int64_t>> Ledger::read_local_peaks() {
  std::lock_guard<SpinLock> g(mu);
  return local_peaks;
}

// -- step boundaries and lingering candidates ---------------------------------------------------

// The step's peak restarts; transient storages alive now become old (lingering candidates).
void Ledger::begin_step(int64_t new_step, int64_t min_old_bytes) {
  std::lock_guard<SpinLock> g(mu);
  step = new_step;
  op_index = 0;
  step_peak = live;
  local_peaks.clear();
  rising = false;
  old_bytes = 0;
  peak_watch_at = 0;
  for (auto& kv : live_entries) {
    Entry* e = kv.second;
    e->old = e->category >= TRANSIENT_FROM && e->nbytes >= min_old_bytes;
    e->linger = false;
    if (e->old) old_bytes += e->nbytes;
  }
  linger_at.clear();
}

// (key, nbytes, step, seq) of old transient storages of at least min_bytes.
std::vector<std::array<int64_t, 4>> Ledger::old_entries(int64_t min_bytes) {
  std::lock_guard<SpinLock> g(mu);
  std::vector<std::array<int64_t, 4>> out;
  for (auto& kv : live_entries) {
    const Entry* e = kv.second;
    if (e->old && e->nbytes >= min_bytes) out.push_back({e->key, e->nbytes, e->step, e->seq});
  }
  return out;
}

// The lingering candidates whose death to note.
void Ledger::set_linger(const std::vector<intptr_t>& keys) {
  std::lock_guard<SpinLock> g(mu);
  for (auto& kv : linger_at) {
    auto it = live_entries.find(kv.first);
    if (it != live_entries.end()) it->second->linger = false;
  }
  linger_at.clear();
  for (intptr_t k : keys) {
    auto it = live_entries.find(k);
    if (it != live_entries.end()) it->second->linger = true;
    linger_at[k] = -1;
  }
}

// The length of local_peaks when candidate `key` died; -1 alive or not a candidate.
int64_t Ledger::linger_index(intptr_t key) {
  std::lock_guard<SpinLock> g(mu);
  auto it = linger_at.find(key);
  return it == linger_at.end() ? -1 : it->second;
}

// -- modules and what they save ------------------------------------------------------------------

// A module starts (its key, its name's index): new storages are charged to it.
void Ledger::enter_module(int64_t key, int32_t name) {
  std::lock_guard<SpinLock> g(mu);
  modules.emplace_back(key, name);
  module = name;
}

void Ledger::leave_module() {
  std::lock_guard<SpinLock> g(mu);
  if (!modules.empty()) modules.pop_back();
  module = modules.empty() ? 0 : modules.back().second;
}

void Ledger::clear_modules() {
  std::lock_guard<SpinLock> g(mu);
  modules.clear();
  module = 0;
}

// Bytes saved for backward this step while module `key` ran.
int64_t Ledger::saved_bytes_of(int64_t key) {
  std::lock_guard<SpinLock> g(mu);
  auto it = saved_bytes.find(key);
  return it == saved_bytes.end() ? 0 : it->second;
}

// This step's saved bytes per module key; the count restarts.
std::unordered_map<int64_t, int64_t> Ledger::take_saved_bytes() {
  std::lock_guard<SpinLock> g(mu);
  std::unordered_map<int64_t, int64_t> out;
  out.swap(saved_bytes);
  saved_seen.clear();
  return out;
}

}  // namespace memprof
