"""GenZ (abhibambhaniya/GenZ-LLM-Analyzer), op by op (docs/model/validation.md, 'GenZ').

GenZ's ring all-reduce (``GZ:GenZ/collective_times.py:L14-L16`` at 0ab4a497fdea636d9e874826a7c85d22215647b5), in ms:

    5e-6 + 2 (N - 1) x interchip_link_latency + 2 (N - 1) x (data / N) / interchip_mem_bw

with the defaults 25 GB/s and 1.9 us (``GZ-sys:GenZ/system.py:L10, L18-L19`` at 27047ed0), GB binary (2^30,
``GZ-unit:GenZ/unit.py:L6, L8, L25-L26`` at 8f6cc168). GenZ charges no fixed time to vector operators
(``GZ:GenZ/operator_base.py`` ``get_roofline``: max(compute, memory, communication)), as our NeuPIMs-class presets.
"""

from __future__ import annotations

import pytest

from librapim_cli.cost import link_cost, npu_cost
from librapim_cli.graph.ops import AllReduce, Vector
from librapim_cli.spec import LinkSpec, load

GIB = 2**30


@pytest.mark.parametrize("bw_gib, ref_us", [(25, 33.20217), (300, 31.73351)])
def test_ring_allreduce(bw_gib, ref_us) -> None:
    # 24 576 B over N = 8 (notes R16): 5 + 14 x 1.9 + 14 x 3072 B / (25 x 2^30 B/s) = 5 + 26.6 + 1.60217 us
    link = LinkSpec(bw_bytes_per_s=bw_gib * GIB, latency_s=1.9e-6, allreduce="ring", collective_start_s=5e-6,
                    source="GenZ defaults")
    c = link_cost(AllReduce("ar", "rest", 24576.0, 8), link, load("hardware", "a100-xpu"))
    assert c.time_s / 1e-6 == pytest.approx(ref_us, rel=1e-6)


def test_no_fixed_vector_time_by_default() -> None:
    # GenZ's operators are max(compute, memory, comm): a LayerNorm on the NeuPIMs NPU (no GPU kernels declared) is
    # its FLOPs on the vector units, 64 x 4096 x 5 / (8 x 128 x 1 GHz) = 1.28 us, with no fixed part
    hw = load("hardware", "neupims-npu-hbm2pim")
    c = npu_cost(Vector("layernorm_1", "qkv", 64 * 4096.0, 5.0, 2), hw)
    assert c.overhead_s == 0 and c.time_s == pytest.approx(1.28e-6)
