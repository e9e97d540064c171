"""The live channel: a profiled process publishes its state; UIs (``memprof.tui``) read it."""
