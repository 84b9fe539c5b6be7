"""What irisflow computes: the Luigi tasks of the Iris pipeline and the plain functions they call.

Nothing here knows about the daemon, Prometheus or the CLI; `luigi --module tasks.iris` runs it alone.
Heavy libraries (pandas, scikit-learn, pandera) are imported inside the functions that need them, so
code that only checks which dates are complete stays fast.
"""
