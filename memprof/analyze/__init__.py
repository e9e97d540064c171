"""Analysis: what is wrong in a run, read from its records (never torch's live state).

- :mod:`~memprof.analyze.base`: the :class:`~memprof.analyze.base.Detector` protocol, the events
  of a run a detector reacts to;
- one module per finding kind, each with its detector (``accumulated_tensor``, ``retained_graph``,
  ``missing_no_grad``, ``lingering_tensor``, ``memory_growth``, ``fragmentation``, ``oom``);
- :mod:`~memprof.analyze.registry`: the list of detectors;
- :mod:`~memprof.analyze.doctor`: the :class:`Doctor` that runs them and merges their findings;
- :mod:`~memprof.analyze.source`: from a variable to the statement that changes it.
"""

from memprof.analyze.doctor import Doctor

__all__ = ["Doctor"]
