"""Test oracles.

``runtime.py``: the decode engine's semantics with the runtime scheduler (issue 11), recomputed with plain
loops (micro-batches, schedule candidates and their splits, stages, DBO by exhaustive search) to check the
vectorized engine figure for figure; ``serving_loop.py``: the step-by-step path of librapim 0.1's serving loop
on the engine's one-iteration call, to check the speculative serving loop.
"""
