"""Test oracles: librapim 0.1's scalar engine (one iteration, one stage at a time) and its step-by-step
serving loop, kept to check the vectorized engine and the speculative serving loop figure for figure.

``iteration.py``, ``stage.py`` and ``dbo.py`` are the pre-vectorization ``schedule/iteration.py``,
``optimize/stage.py`` and ``optimize/dbo.py``, adapted only to read the concurrency mode from the registry;
``serving_loop.py`` is the step-by-step path of the old ``serving/loop.py`` on the engine's one-iteration call.
"""
