"""The live channel: a profiled process publishes its state; UIs (``memprof.tui``) read it.

- :mod:`~memprof.live.state`: the one schema both ends share (``LiveState``);
- :mod:`~memprof.live.paths`: where sockets live (``$MEMPROF_LIVE_DIR``, ...), owner-only;
- :mod:`~memprof.live.publisher`: ``LivePublisher``, what a profiled run runs;
- :mod:`~memprof.live.client`: ``LiveClient`` and ``discover``, what ``memprof monitor`` and the TUI read.
"""
