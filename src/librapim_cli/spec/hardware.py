"""Hardware of one device: NPU (or xPU), its HBM stacks, the PIM units in them, energy constants."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict, model_validator

from .base import Spec


class KernelSpec(Spec):
    """A GPU-style vector kernel (docs/model/npu.md, 'Vector ops'): a fixed time no other kernel overlaps, plus
    its operands' DRAM traffic at a rate relative to the peak bandwidth of the memory the NPU streams from. With
    no fixed time and no traffic (the defaults) the op is not a kernel: it runs on the vector units from on-chip
    operands, overlapping the other engines."""

    fixed_s: float = Field(default=0.0, ge=0, le=1, description="Fixed time of one launch of the kernel (launch, "
                                                                "synchronisation, tail), seconds.")
    tensors: float = Field(default=0.0, ge=0, le=64, description="Tensors of the op's size the kernel reads or writes "
                                                                 "in DRAM (in + out; 0: operands stay on chip). A "
                                                                 "gated activation adds its gate.")
    bw_fraction: float = Field(default=1.0, gt=0, le=16, description="Rate of that traffic as a fraction of the peak "
                                                                     "memory bandwidth (a measured fit may exceed 1).")

    @property
    def is_kernel(self) -> bool:
        """True if the op runs as a GPU kernel (a fixed time or DRAM traffic), False for the vector units."""
        return self.fixed_s > 0 or self.tensors > 0


class VectorKernelsSpec(Spec):
    """Per class of vector op, the GPU kernel that runs it (default: none, the vector units)."""

    layernorm: KernelSpec = Field(default_factory=KernelSpec, description="LayerNorm kernels (layernorm_1, layernorm_2).")
    activation: KernelSpec = Field(default_factory=KernelSpec, description="The FFN activation kernel (act_*).")
    softmax: KernelSpec = Field(default_factory=KernelSpec, description="The attention softmax kernel.")
    residual: KernelSpec = Field(default_factory=KernelSpec, description="Residual-add kernels (residual_1, residual_2).")


class ThreadBlockSpec(Spec):
    """GPU-style occupancy (docs/model/npu.md, 'Occupancy'): a kernel's thread blocks run in waves over ``cores``
    SMs; a partly filled last wave leaves SMs idle, which slows compute and memory alike. ``cores = 0`` (the
    default): no occupancy model."""

    cores: int = Field(default=0, ge=0, le=65536, description="Streaming multiprocessors (cores) thread blocks run "
                                                              "on; 0: no occupancy model.")
    l1_bytes: int = Field(default=0, ge=0, le=2**30, description="On-chip memory of one SM, bytes: bounds a GEMM "
                                                                 "thread block's tile.")
    tile_sizes: tuple[Annotated[int, Strict(), Field(ge=1, le=65536)], ...] = Field(
        default=(), strict=False, max_length=64,
        description="Candidate GEMM tile edges (rows and columns of one thread block).")
    tile_k: int = Field(default=32, ge=1, le=65536, description="Reduction depth of a GEMM tile held on chip at once.")

    @model_validator(mode="after")
    def _check(self) -> ThreadBlockSpec:
        if self.cores > 0 and not self.tile_sizes:
            raise ValueError("thread_blocks.cores > 0 needs tile_sizes (the candidate GEMM tile edges)")
        return self


class NPUSpec(Spec):
    """A weight-stationary systolic-array accelerator (or an xPU approximated as one)."""

    systolic_arrays: int = Field(ge=1, le=4096, description="Number of systolic arrays working in parallel.")
    sa_rows: int = Field(ge=1, le=4096, description="Rows of one systolic array (reduction dimension K per tile).")
    sa_cols: int = Field(ge=1, le=4096, description="Columns of one systolic array (output dimension N per tile).")
    clock_hz: float = Field(ge=1e6, le=1e11, description="Array clock in Hz.")
    vector_units: int = Field(ge=1, le=65536, description="Number of vector units (softmax, norms, activations).")
    vector_width: int = Field(ge=1, le=65536, description="Lanes per vector unit (one FP op per lane per cycle).")
    sram_bytes: int = Field(ge=0, le=2**40, description="On-chip SRAM (scratchpad + accumulators) in bytes.")
    compute_efficiency: float = Field(ge=0.001, le=1, description="Cap on achievable fraction of peak FLOP/s.")
    bandwidth_efficiency: float = Field(ge=0.001, le=1, description="Cap on achievable fraction of external memory bandwidth.")
    op_overhead_s: float = Field(ge=0, le=1, description="Fixed launch/sync overhead added to every NPU op, seconds.")
    vector_kernels: VectorKernelsSpec = Field(
        default_factory=VectorKernelsSpec,
        description="GPU kernels of the vector ops (fixed time and DRAM traffic); default: none, vector ops run on "
                    "the vector units from on-chip operands.")
    thread_blocks: ThreadBlockSpec = Field(
        default_factory=ThreadBlockSpec,
        description="GPU occupancy model of GEMM and attention kernels (waves of thread blocks over the SMs); "
                    "default: none, every op runs at the engines' full rate.")

    @property
    def macs_per_cycle(self) -> int:
        """Multiply-accumulates per cycle over all arrays."""
        return self.systolic_arrays * self.sa_rows * self.sa_cols

    @property
    def peak_flops(self) -> float:
        """Peak FLOP/s = arrays * rows * cols * 2 * clock."""
        return 2.0 * self.macs_per_cycle * self.clock_hz

    @property
    def vector_flops(self) -> float:
        """Peak vector FLOP/s = units * width * clock."""
        return float(self.vector_units * self.vector_width) * self.clock_hz


class MemorySpec(Spec):
    """HBM organisation and DRAM timing (all timing in ns, as datasheets and simulators give them)."""

    generation: Literal["HBM2", "HBM2E", "HBM3", "HBM3E", "GDDR6"] = Field(description="DRAM standard.")
    stacks: int = Field(ge=1, le=64, description="HBM stacks (or GDDR6 chips) attached to one device.")
    channels_per_stack: int = Field(ge=1, le=256, description="Independent channels per stack.")
    pseudo_channels: int = Field(ge=1, le=16, description="Pseudo-channels per channel (1 if the channel is not split).")
    ranks: int = Field(ge=1, le=64, description="Ranks (stack IDs) sharing a (pseudo-)channel.")
    bank_groups: int = Field(ge=1, le=64, description="Bank groups per rank.")
    banks_per_group: int = Field(ge=1, le=64, description="Banks per bank group.")
    row_bytes: int = Field(ge=32, le=2**20, description="Bytes in one DRAM row (page) of one bank.")
    column_bytes: int = Field(ge=1, le=2**16, description="Bytes one bank delivers per column access to its local I/O (PIM MAC operand width).")
    channel_width_bits: int = Field(ge=1, le=4096, description="Data bus width of one (pseudo-)channel in bits.")
    pin_rate_bps: float = Field(ge=1e6, le=1e12, description="Data rate per pin in bit/s.")
    capacity_bytes: int = Field(ge=1, le=2**50, description="Total capacity of all stacks on the device, bytes.")
    tCK_ns: float = Field(ge=1e-3, le=1e6, description="Command clock period, ns.")
    CL_ns: float = Field(ge=0, le=1e6, description="Read (CAS) latency, ns.")
    tRCD_ns: float = Field(ge=0, le=1e6, description="ACT to column command, ns.")
    tRP_ns: float = Field(ge=0, le=1e6, description="Precharge period, ns.")
    tRAS_ns: float = Field(ge=0, le=1e6, description="ACT to PRE minimum, ns.")
    tRC_ns: float = Field(ge=0, le=1e6, description="ACT to ACT same bank (tRAS + tRP), ns.")
    tCCD_S_ns: float = Field(ge=1e-3, le=1e6, description="Column to column, different bank group, ns.")
    tCCD_L_ns: float = Field(ge=1e-3, le=1e6, description="Column to column, same bank group, ns.")
    tRRD_S_ns: float = Field(ge=0, le=1e6, description="ACT to ACT, different bank group, ns.")
    tRRD_L_ns: float = Field(ge=0, le=1e6, description="ACT to ACT, same bank group, ns.")
    tFAW_ns: float = Field(ge=0, le=1e6, description="Four-activation window per rank, ns.")
    tRTP_ns: float = Field(ge=0, le=1e6, description="Read to precharge, ns.")
    tWR_ns: float = Field(ge=0, le=1e6, description="Write recovery, ns.")
    tRFC_ns: float = Field(ge=0, le=1e6, description="All-bank refresh cycle time, ns.")
    tREFI_ns: float = Field(ge=1e-3, le=1e6, description="Average refresh interval, ns.")

    @model_validator(mode="after")
    def _check(self) -> MemorySpec:
        if self.tRFC_ns >= self.tREFI_ns:
            raise ValueError(f"tRFC_ns ({self.tRFC_ns}) must be < tREFI_ns ({self.tREFI_ns})")
        if self.row_bytes % self.column_bytes:
            raise ValueError(f"row_bytes ({self.row_bytes}) must be a multiple of column_bytes ({self.column_bytes})")
        return self

    @property
    def channels(self) -> int:
        """Independently addressed (pseudo-)channels on the device = stacks * channels * pseudo-channels."""
        return self.stacks * self.channels_per_stack * self.pseudo_channels

    @property
    def banks_per_channel(self) -> int:
        """Banks behind one (pseudo-)channel = ranks * bank groups * banks per group."""
        return self.ranks * self.bank_groups * self.banks_per_group

    @property
    def banks(self) -> int:
        """All banks of the device."""
        return self.channels * self.banks_per_channel

    @property
    def channel_bw_bytes_per_s(self) -> float:
        """Peak bandwidth of one (pseudo-)channel = width * pin rate / 8."""
        return self.channel_width_bits * self.pin_rate_bps / 8.0

    @property
    def bw_bytes_per_s(self) -> float:
        """External peak bandwidth = channels * width * pin rate / 8 (docs/sources.md#s5.4)."""
        return self.channels * self.channel_bw_bytes_per_s

    @property
    def bank_column_bw_bytes_per_s(self) -> float:
        """Per-bank column bandwidth = column_bytes / max(tCCD_L, tCK) (docs/sources.md#s5.4)."""
        return self.column_bytes / (max(self.tCCD_L_ns, self.tCK_ns) * 1e-9)

    @property
    def refresh_derate(self) -> float:
        """Fraction of time a bank is available: 1 - tRFC/tREFI."""
        return 1.0 - self.tRFC_ns / self.tREFI_ns


class PIMSpec(Spec):
    """Bank-level processing-in-memory units inside the HBM."""

    mac_lanes_per_unit: int = Field(ge=1, le=4096, description="FP16 multipliers per PIM unit (one MAC command does this many MACs).")
    banks_per_unit: int = Field(ge=1, le=4, description="Banks sharing one PIM unit (1 = per-bank, 2 = per bank pair).")
    clock_hz: float = Field(ge=1e6, le=1e11, description="PIM unit clock in Hz; caps the MAC command rate.")
    mac_interval_ns: float = Field(ge=1e-3, le=1e6, description="Minimum interval between all-bank MAC commands, ns (no power limit).")
    mac_interval_power_limited_ns: float = Field(ge=1e-3, le=1e6, description="All-bank MAC interval under the power limit, ns.")
    power_limited: bool = Field(description="Run at the power-limited MAC interval.")
    global_buffer_bytes: int = Field(ge=2, le=2**30, description="Global buffer holding the broadcast input vector, bytes.")
    input_registers: int = Field(ge=1, le=4096, description="Input vectors held at once; an open row is reused across this many vectors.")
    activate_groups_per_rank: int = Field(
        ge=1, le=64, description="All-bank activation is issued in this many group-ACTs per rank, each paced by tFAW.")
    activate_tfaw_paced: bool = Field(
        default=True, description="Group-ACTs of an all-bank activation obey the four-activation window tFAW; false: "
                                  "they are only tRRD_S apart (AttAcc's ACTAB has no tFAW rule).")
    allbank_pseudo_channels: int = Field(
        default=1, ge=1, le=16,
        description="Pseudo-channels one all-bank MAC command covers; their banks work in lock-step as one PIM "
                    "channel (1: one (pseudo-)channel, NeuPIMs; 2: AttAcc's MACAB over a legacy HBM3 channel).")
    context_layout: Literal["dim", "token"] = Field(
        default="dim",
        description="V layout in a channel: 'dim' (V striped by head dimension over the banks, a row holds "
                    "consecutive tokens of one dimension; NeuPIMs) or 'token' (V striped by token like K, a token's "
                    "V contiguous in its bank; AttAcc).")
    io_overlaps_mac: bool = Field(
        default=False,
        description="Broadcast, read-out and softmax data moves use a data path separate from the MAC commands and "
                    "overlap them: a request's channel time is max(banks, I/O) instead of banks + I/O (AttAcc).")

    @property
    def effective_mac_interval_ns(self) -> float:
        """Interval between MAC commands: max(command interval for the power mode, 1/clock)."""
        base = self.mac_interval_power_limited_ns if self.power_limited else self.mac_interval_ns
        return max(base, 1e9 / self.clock_hz)


class EnergySpec(Spec):
    """Energy constants, pJ per bit or per op (docs/sources.md#s3.4.3: AttAcc config, citing FGDRAM MICRO'17)."""

    source: str = Field(description="Where the constants come from.")
    dram_act_pj_per_bit: float = Field(ge=0, le=1e6, description="Row activation + precharge energy, charged per bit read (streams open every row they read).")
    dram_cell_read_pj_per_bit: float = Field(ge=0, le=1e6, description="Cell read/write energy per bit (to the bank I/O).")
    dram_bank_to_io_pj_per_bit: float = Field(ge=0, le=1e6, description="Column decoder -> bank-group mux -> global I/O mux, per bit.")
    dram_offchip_pj_per_bit: float = Field(ge=0, le=1e6, description="TSV + interposer per bit leaving the stack.")
    npu_pj_per_flop: float = Field(ge=0, le=1e6, description="NPU ALU energy per FLOP.")
    pim_pj_per_flop: float = Field(ge=0, le=1e6, description="PIM MAC-lane energy per FLOP.")
    link_pj_per_bit: float = Field(ge=0, le=1e6, description="Device-to-device link energy per bit.")


class HardwareSpec(Spec):
    """One device: an NPU/xPU with its HBM and (optionally) PIM units in that HBM."""

    name: str = Field(min_length=1, max_length=200, description="Preset name of the hardware.")
    source: str = Field(description="Paper, simulator config or datasheet the numbers come from.")
    description: str = Field(default="", description="One-line human summary.")
    npu: NPUSpec = Field(description="The GEMM engine.")
    memory: MemorySpec = Field(description="HBM stacks attached to the device.")
    pim: PIMSpec | None = Field(default=None, description="Bank-level PIM units in that HBM, or none.")
    xpu_memory: MemorySpec | None = Field(
        default=None,
        description="The xPU's own memory when the PIM stacks are separate from it (AttAcc): it holds the weights, "
                    "which the xPU streams from it; `memory` then holds only the KV cache. None: one memory.")
    energy: EnergySpec = Field(description="Energy constants.")

    @model_validator(mode="after")
    def _check(self) -> HardwareSpec:
        if self.pim is not None and self.memory.pseudo_channels % self.pim.allbank_pseudo_channels:
            raise ValueError(f"pim.allbank_pseudo_channels ({self.pim.allbank_pseudo_channels}) must divide "
                             f"memory.pseudo_channels ({self.memory.pseudo_channels})")
        if self.xpu_memory is not None and self.pim is None:
            raise ValueError("xpu_memory (a memory beside the PIM stacks) needs pim")
        return self

    # ---- derived ---------------------------------------------------------------------------
    @property
    def npu_memory(self) -> MemorySpec:
        """The memory the NPU streams its weights (and vector-kernel operands) from: `xpu_memory`, else `memory`."""
        return self.xpu_memory if self.xpu_memory is not None else self.memory

    @property
    def ridge_flop_per_byte(self) -> float:
        """NPU ridge point = peak FLOP/s / the bandwidth of the memory holding its weights."""
        return self.npu.peak_flops / self.npu_memory.bw_bytes_per_s

    @property
    def pim_channels(self) -> int:
        """PIM channels: groups of `allbank_pseudo_channels` (pseudo-)channels an all-bank command drives together
        (the memory's channels without PIM)."""
        return self.memory.channels // (1 if self.pim is None else self.pim.allbank_pseudo_channels)

    @property
    def pim_banks_per_channel(self) -> int:
        """Banks one all-bank MAC command covers = banks per (pseudo-)channel x `allbank_pseudo_channels`."""
        return self.memory.banks // self.pim_channels

    @property
    def pim_channel_bw_bytes_per_s(self) -> float:
        """Peak data-bus bandwidth of one PIM channel = its (pseudo-)channels' buses together."""
        return self.memory.bw_bytes_per_s / self.pim_channels

    @property
    def pim_units(self) -> int:
        """PIM units on the device = banks / banks_per_unit."""
        return 0 if self.pim is None else self.memory.banks // self.pim.banks_per_unit

    @property
    def pim_peak_flops(self) -> float:
        """Peak PIM FLOP/s = units * lanes * 2 / MAC interval."""
        if self.pim is None:
            return 0.0
        return self.pim_units * self.pim.mac_lanes_per_unit * 2.0 / (self.pim.effective_mac_interval_ns * 1e-9)

    @property
    def pim_internal_bw_bytes_per_s(self) -> float:
        """Bytes the PIM units consume at peak = units * lanes * dtype(2 B) / MAC interval."""
        if self.pim is None:
            return 0.0
        return self.pim_units * self.pim.mac_lanes_per_unit * 2.0 / (self.pim.effective_mac_interval_ns * 1e-9)

    @property
    def pim_bw_ratio(self) -> float:
        """Internal (PIM peak) / external bandwidth."""
        return self.pim_internal_bw_bytes_per_s / self.memory.bw_bytes_per_s
