"""The terminal UIs: the live view of a run (``memprof run --tui``) and ``memprof monitor``.

They read the live channel (:mod:`memprof.live`) and the hardware layer (:mod:`memprof.hw`), with
:mod:`memprof.units` and :mod:`memprof.model`, and nothing else of memprof: ``ruff.toml`` here bans
importing torch, ``memprof.collect``, ``analyze``, ``advise``, ``report``, ``session``, ``runner``,
``api`` and ``cli``. Textual is imported by the submodules, not here, so importing this package
stays cheap.
"""
