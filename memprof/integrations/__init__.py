"""Where users already train: memprof inside other tools (pytest, and more to come).

Each integration is imported only by the tool that uses it (pytest loads
:mod:`memprof.integrations.pytest_plugin` through its ``pytest11`` entry point); none imports torch
or the tool itself at import time beyond what that tool has already loaded.
"""
