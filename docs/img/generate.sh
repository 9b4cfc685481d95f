#!/usr/bin/env bash
# Regenerate the example figures of docs/plots.md (run from anywhere; takes well under a minute).
#
#   bash docs/img/generate.sh
#
# Every figure is one `librapim plot ...` command; the Pareto example first runs a small grid sweep
# (the bundled two-objective spec `throughput-vs-area`) into a throwaway SQLite study.
set -euo pipefail

cd "$(dirname "$0")/../.."
LIBRAPIM=${LIBRAPIM:-librapim}
IMG=docs/img
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# batch 512: sub-batch interleaving on (NeuPIMs enables it from 256), and the NPU-bound regime where
# DBO has PIM idle time to fill
$LIBRAPIM plot roofline --system librapim --model gpt3-7b --batch 512 --out "$IMG/roofline.png"
$LIBRAPIM plot timeline --systems neupims,librapim --model gpt3-7b --batch 512 --layers 3 --out "$IMG/timeline.png"
$LIBRAPIM plot compare --systems npu-only,neupims,librapim --models gpt3-7b,llama2-7b --batch 512 \
    --baseline neupims --out "$IMG/compare.png"

# a 60-trial random search of docs/img/pareto-sweep.toml (throughput against iteration time over batch,
# concurrency mode and PIM MAC lanes), seeded so the figure is the same every time
$LIBRAPIM sweep docs/img/pareto-sweep.toml --sampler random --seed 1 --storage "sqlite:///$TMP/study.db" > /dev/null
$LIBRAPIM plot pareto --storage "sqlite:///$TMP/study.db" --study docs-throughput-vs-latency --out "$IMG/pareto.png"

ls -l "$IMG"/*.png
