from memprof.cli.main import entry

entry()
