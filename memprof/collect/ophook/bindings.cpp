// memprof's op hook: the detailed mode's storage ledger, kept in C++, as Python sees it.
//
// The pieces: ledger.h (an entry per live storage, the running sums; ledger.cpp, scaling.cpp),
// marks.h (a storage's entry, found by the deleter swapped at its birth), hook.h (the
// RecordFunction callback and its calls into Python), counter.h (the CPU allocator's bytes, counted), pack.h (what autograd saves), pycalls.h
// (calls that take tensors or give Python tuples), categories.h (generated from
// memprof.model.categories). Each binding below names a function or method: no logic here.
//
// Built on first use by memprof.collect.ophook with torch.utils.cpp_extension.
#include <torch/csrc/utils/pybind.h>  // the casters of tensors and of the standard containers

#include "counter.h"
#include "hook.h"
#include "ledger.h"
#include "pack.h"
#include "pycalls.h"

namespace py = pybind11;
using memprof::get_field;
using memprof::Ledger;
using memprof::set_field;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "memprof's op hook: the detailed mode's storage ledger, in C++";
  m.attr("NEW") = memprof::NEW;
  m.attr("FOREIGN") = memprof::FOREIGN;
  py::class_<Ledger, std::shared_ptr<Ledger>>(m, "Ledger")
      .def(py::init<>())
      .def_property_readonly("live", &get_field<&Ledger::live>)
      .def_property_readonly("peak", &get_field<&Ledger::peak>)
      .def_property_readonly("peak_seq", &get_field<&Ledger::peak_seq>)
      .def_property_readonly("peak_step", &get_field<&Ledger::peak_step>)
      .def_property_readonly("step_peak", &get_field<&Ledger::step_peak>)
      .def_property_readonly("seq", &get_field<&Ledger::seq>)
      .def_property_readonly("scaled_live", &get_field<&Ledger::scaled_live>)
      .def_property_readonly("old_bytes", &get_field<&Ledger::old_bytes>)
      .def_property_readonly("count", &Ledger::count)
      .def_property_readonly("cat", &Ledger::read_cat)
      .def_property_readonly("peak_cat", &Ledger::read_peak_cat)
      .def_property_readonly("local_peaks", &Ledger::read_local_peaks, "(live, scaled live) before each fall of this step")
      .def_property("step", &get_field<&Ledger::step>, &set_field<&Ledger::step>)
      .def_property("module", &get_field<&Ledger::module>, &set_field<&Ledger::module>)
      .def_property("infer_saved", &get_field<&Ledger::infer_saved>, &memprof::set_infer_saved,
                    "the pack hook is off: storages born where saved ones were on sampled steps are activations, and ops' "
                    "inputs are not read (batch scaling's taint by birth too)")
      .def_property("sample_sites", &get_field<&Ledger::sample_sites>, &set_field<&Ledger::sample_sites>,
                    "look up every large storage's line (else reuse the one of the same op in an earlier step)")
      .def_property("site_min_bytes", &get_field<&Ledger::site_min_bytes>, &set_field<&Ledger::site_min_bytes>)
      .def_property("peak_watch_share", &get_field<&Ledger::peak_watch_share>,
                    &set_field<&Ledger::peak_watch_share>)
      .def_property("peak_watch_at", &get_field<&Ledger::peak_watch_at>, &set_field<&Ledger::peak_watch_at>)
      .def("set_scaling", &Ledger::set_scaling,
           "the batch size and the parameters' sizes (numels, sorted shapes) that batch scaling checks")
      .def("pack", &memprof::pack, "the saved-tensor pack hook: count, categorise, charge to the modules running")
      .def("enter_module", &Ledger::enter_module,
           "a module starts (its key, its name's index): new storages are charged to it")
      .def("leave_module", &Ledger::leave_module)
      .def("clear_modules", &Ledger::clear_modules)
      .def("saved_bytes_of", &Ledger::saved_bytes_of, "bytes saved for backward this step while module `key` ran")
      .def("take_saved_bytes", &Ledger::take_saved_bytes, "this step's saved bytes per module key; the count restarts")
      .def("touch_all", &memprof::touch_all, py::arg("tensors"), py::arg("category"), py::arg("step"))
      .def("touch", &memprof::touch, py::arg("tensor"), py::arg("category"), py::arg("step"), py::arg("to") = -1,
           py::arg("only_from_mask") = 0)
      .def("set_site", &Ledger::set_site)
      .def("release", &Ledger::release, "a storage not marked has died (Python's weak reference): count it")
      .def("seq_of", &Ledger::seq_of, "the order of birth of the live storage `key`, -1 if none")
      .def("entry", &memprof::entry,
           "the live entry `key`: (key, nbytes, category, step, seq, site, module, scaled, shape, dtype), or None")
      .def("entries", &memprof::entries, "every live entry, oldest first")
      .def("begin_step", &Ledger::begin_step,
           "a step boundary: the step's peak restarts; transient storages alive now become old")
      .def("old_entries", &Ledger::old_entries,
           "(key, nbytes, step, seq) of old transient storages of at least min_bytes")
      .def("set_linger", &Ledger::set_linger, "the lingering candidates whose death to note")
      .def("linger_index", &Ledger::linger_index,
           "the length of local_peaks when candidate `key` died; -1 alive or not a candidate")
      .def("mark_first_batch", &Ledger::mark_first_batch,
           "the first model call's batch: pre-loop storages that scale with it (its inputs, when known)");
  m.def("install", &memprof::install, py::arg("ledger"), py::arg("site"), py::arg("foreign"), py::arg("peak"),
        "count this thread's ops into ledger; site() -> int, foreign(storage, key), peak(live)");
  m.def("uninstall", &memprof::uninstall);
  m.def("install_cpu_counter", &memprof::install_cpu_counter,
        "count the CPU allocator's bytes at every allocation and free; False where it cannot");
  m.def("uninstall_cpu_counter", &memprof::uninstall_cpu_counter);
  m.def("cpu_counter_installed", &memprof::cpu_counter_installed);
  m.def("read_cpu_counter", &memprof::read_cpu_counter, py::arg("restart_peak") = false,
        "(live, peak) bytes of the CPU allocator (usable sizes); restart_peak: the peak restarts at live");
  m.def("error_count", &memprof::error_count);
}
