"""The ``memprof`` command line: one small class per command."""
