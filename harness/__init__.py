"""RF test harness: plans, runner, stimulus, measurements, results, CLI."""

__version__ = "0.1.0"
