"""Resource tiers: Pupload's tier names and the container limits each one means."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
GIB = 1024 * MIB
#: A tier's default output limit, in multiples of its memory: room for what a node
#: of that size makes (a video re-encoded, an archive unpacked), never a disk's worth.
OUTPUT_BYTES_PER_MEMORY = 4


@dataclass(frozen=True)
class Tier:
    name: str
    cpus: int
    memory: int  # bytes
    gpus: int = 0
    gpu_vendor: str | None = None
    # Enough for a process tree of ordinary tools, small enough to stop a fork bomb.
    pids: int = 512

    @property
    def memory_mib(self) -> int:
        return self.memory // MIB

    @property
    def output_bytes(self) -> int:
        """How large each output of a node of this tier may be, unless its NodeDef says."""
        return OUTPUT_BYTES_PER_MEMORY * self.memory

    def describe(self) -> str:
        gpu = f", {self.gpus} {self.gpu_vendor} GPU" if self.gpus else ""
        return f"{self.name} ({self.cpus} CPU, {self.memory_mib} MiB{gpu})"


def _table() -> dict[str, Tier]:
    rows: list[Tier] = []
    for name, cpus, mem_gib in [
        ("c-nano", 1, 0.5), ("c-micro", 1, 1), ("c-small", 2, 2), ("c-medium", 4, 4),
        ("c-large", 8, 8), ("c-xlarge", 16, 16), ("c-2xlarge", 32, 32), ("c-4xlarge", 64, 64),
        ("m-small", 2, 4), ("m-medium", 4, 16), ("m-large", 8, 32), ("m-xlarge", 16, 64),
        ("m-2xlarge", 32, 128), ("m-4xlarge", 64, 256),
    ]:  # fmt: skip
        rows.append(Tier(name, cpus, int(mem_gib * GIB)))
    for prefix, vendor, sizes in [
        ("g", "any", [("micro", 4, 8), ("small", 4, 16), ("medium", 8, 32), ("large", 12, 48),
                      ("xlarge", 16, 64), ("2xlarge", 24, 96)]),
        ("gn", "nvidia", [("small", 4, 16), ("medium", 8, 32), ("large", 12, 48),
                          ("xlarge", 16, 64), ("2xlarge", 24, 96)]),
        ("ga", "amd", [("small", 4, 16), ("medium", 8, 32), ("large", 12, 48),
                       ("xlarge", 16, 64), ("2xlarge", 24, 96)]),
        ("gi", "intel", [("small", 4, 16), ("medium", 8, 32), ("large", 12, 48),
                         ("xlarge", 16, 64)]),
    ]:  # fmt: skip
        for size, cpus, mem_gib in sizes:
            rows.append(Tier(f"{prefix}-{size}", cpus, mem_gib * GIB, gpus=1, gpu_vendor=vendor))
    return {t.name: t for t in rows}


TIERS: dict[str, Tier] = _table()


def get_tier(name: str) -> Tier | None:
    return TIERS.get(name)


__all__ = ["GIB", "MIB", "TIERS", "Tier", "get_tier"]
