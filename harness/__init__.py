"""RF test harness: plans, runner, stimulus, measurements, results, CLI."""

import os

# The analyses' linear algebra is small (tall, narrow least squares): BLAS threads gain nothing there,
# and on a busy machine they spin against each other (a 60000 x 14 lstsq: 56 ms on one thread, 370 ms on
# two). Takes effect when the harness is imported before numpy (the CLI, the bench scripts); an
# explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
