"""Peak dense bf16/fp16 tensor throughput of common GPUs, for the MFU column of `webssl bench`.

The numbers are the vendors' datasheet peaks for dense (non-sparse) bf16 with fp32
accumulation, the convention of published MFU figures, so a bench here compares with a paper.
A well-tuned large matmul reaches about 80% of it (~790 TFLOP/s on an H100 SXM, see
docs/models.md); pass ``--peak-tflops 790`` to measure against that practical ceiling.
Matched as case-insensitive substrings of ``torch.cuda.get_device_name()``, longest first
(so "H100 PCIe" wins over "H100").
"""
from __future__ import annotations

KNOWN_PEAKS: dict[str, float] = {
    "B200": 2250.0,
    "B100": 1750.0,
    "GH200": 989.4,
    "H200": 989.4,          # same GH100 chip as the H100 SXM, more and faster memory
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,          # SXM5 (device name "NVIDIA H100 80GB HBM3")
    "H800": 989.4,
    "H20": 148.0,
    "A100": 312.0,
    "A800": 312.0,
    "A40": 149.7,
    "A6000": 154.8,         # RTX A6000 (Ampere)
    "RTX 6000 Ada": 364.2,
    "L40S": 362.1,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.2,
    "RTX 3090": 71.0,
    "V100": 125.0,          # fp16 only: V100 has no bf16
    "T4": 65.0,             # fp16 only
    "MI300X": 1307.4,
    "MI250X": 383.0,
}


def match_peak(device_name: str | None) -> tuple[str, float] | None:
    """(table key, datasheet dense bf16 TFLOP/s) for a device name, or None when unknown."""
    if not device_name:
        return None
    name = device_name.lower()
    for key in sorted(KNOWN_PEAKS, key=len, reverse=True):
        if key.lower() in name:
            return key, KNOWN_PEAKS[key]
    return None


def peak_for(device_name: str | None, precision: str) -> float | None:
    """Datasheet dense half-precision peak for a device name, or None when unknown.

    Only bf16/fp16 have a peak here: fp32 runs plain fp32 matmuls (TF32 is off by default),
    whose peak is a small fraction of the tensor-core one, so an MFU against it would mislead.
    """
    if precision not in ("bf16", "fp16"):
        return None
    hit = match_peak(device_name)
    return hit[1] if hit else None
