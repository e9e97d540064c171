"""The terminal UIs: the live view of a run (``memprof run --tui``) and ``memprof monitor``.

They read the live channel (:mod:`memprof.live`) and the hardware layer (:mod:`memprof.hw`) only,
never the collectors: ``ruff.toml`` here bans importing ``memprof.collect``, ``memprof.analyze``
and ``memprof.advise``. Textual is imported by the submodules, not here, so importing this
package stays cheap.
"""
