"""Upper bounds on every size and count the tool accepts (docs/model/specs.md, "Bounds").

librapim is an analytical model: its cost grows with the batch (arrays of one entry per request per
iteration) and with the request count (the serving loop), not with the modelled hardware. The limits below
are an order of magnitude or more above anything published, and low enough that a typo cannot exhaust
memory or run for hours before an error: a bad size is rejected before any work starts.
"""

from __future__ import annotations

#: requests decoded together in one iteration (--batch, workload.max_batch, system.sub_batch_min_batch):
#: published batches reach 512 (NeuPIMs, LibraPIM), vLLM's default cap is 256; 2**16 is 128x that
MAX_BATCH = 65_536
#: requests in a workload (--requests, workload.num_requests, rows of a trace CSV): ShareGPT has ~90k
#: conversations, Alpaca 52k; serving 10^6 requests takes about two minutes (benchmarks/README.md)
MAX_REQUESTS = 1_000_000
#: tokens of one request (lengths, max_seq_len, length statistics): 2**20, a 1M-token context
MAX_TOKENS = 1_048_576
#: seeds (workload.seed, dbo.seed): numpy's SeedSequence takes non-negative integers; 32 bits suffice
MAX_SEED = 2**32 - 1
#: size of a request-trace CSV file (1M rows of three numbers take ~20 MiB)
MAX_TRACE_BYTES = 64 * 2**20
#: seconds (arrival times in traces, overheads, latencies): ~31.7 years
MAX_SECONDS = 1e9
