"""Coverage measured in forked workers (pytest-cov, or coverage started any
other way in the zygote).

A worker inherits the zygote's coverage tracer and its data collected so
far. Left as is, what the worker measures dies with it (it ends with
``os._exit``). So a worker restarts coverage with the zygote's settings and
a data file of its own (the zygote's name plus a suffix of its own, as
coverage's ``parallel`` mode names them) and saves it before it exits; the
zygote's ``coverage combine`` (pytest-cov's at the end of the session)
takes them in, as it takes in xdist workers' data.
"""

_worker_coverage = None


def restart_in_worker():
    """In a worker just forked: measure into a data file of its own."""
    global _worker_coverage
    try:
        import coverage
        from coverage.control import CONFIG_DATA_PREFIX
    except ImportError:  # no coverage, or one that can't pass its settings on
        return
    inherited = coverage.Coverage.current()
    if inherited is None:
        return
    try:
        settings = CONFIG_DATA_PREFIX + inherited.config.serialize()
    except AttributeError:  # a coverage that can't pass its settings on
        return
    # The zygote's data, copied by the fork, is the zygote's to save.
    inherited._auto_save = False
    inherited.stop()
    _worker_coverage = coverage.Coverage(config_file=settings, data_suffix=True)
    _worker_coverage._warn_no_data = False
    _worker_coverage._warn_unimported_source = False
    _worker_coverage._warn_preimported_source = False
    _worker_coverage.start()


def save_in_worker():
    """Before a worker exits: its measurements, to its own data file."""
    if _worker_coverage is None:
        return
    _worker_coverage.stop()
    _worker_coverage.save()
