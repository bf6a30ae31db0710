"""`--decode gpu` sends a JPEG to nvJPEG only when its entropy-coded data is one clean scan
ending at the EOI: nvJPEG decodes a stray marker in the scan data silently into garbage (H100,
2026-11-27) where libjpeg on the CPU reports it, so such files are left to the CPU path."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.extract_helpers import config
from tests.helpers import images as img
from webssl_cli import extract, read_features
from webssl_cli.config import PreprocessConfig
from webssl_cli.distributed import detect_rank
from webssl_cli.distributed.signals import StopFlag
from webssl_cli.pipeline.gpu_decode import gpu_decoded_bytes
from webssl_cli.pipeline.runner import RankRun
from webssl_cli.pipeline.setup import prepare
from webssl_cli.preprocess import DecodeError, load_sample
from webssl_cli.preprocess.sniff import jpeg_scan_start, jpeg_single_clean_scan
from webssl_cli.store import OutputLayout, done_units

PCFG = PreprocessConfig(224)
RST = [bytes([0xFF, c]) for c in range(0xD0, 0xD8)]


def example_jpeg(i: int = 0, scale: int = 1, **save: object) -> bytes:
    """An example photo (``examples/images``) re-saved as a baseline JPEG by PIL."""
    im = img.photo(i)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.BICUBIC)
    return img.encode(im, "JPEG", quality=90, **save)


def with_stray_marker(data: bytes) -> bytes:
    """Headers and EOI intact; a DHT marker written 20 bytes after SOS, inside the scan data
    (as benchmarks/gpu_paths.py's ``_corrupt``)."""
    out = bytearray(data)
    sos = out.find(b"\xff\xda")
    assert sos + 20 >= jpeg_scan_start(data)            # past the SOS header: in the scan data
    out[sos + 20:sos + 22] = b"\xff\xc4"
    return bytes(out)


def test_a_plain_baseline_jpeg_goes_to_the_gpu() -> None:
    data = example_jpeg(0)
    assert jpeg_single_clean_scan(data)
    w, h = img.photo(0).size
    assert gpu_decoded_bytes(data, PCFG) == w * h * 3


def test_stuffed_ff_bytes_in_the_scan_are_data_not_markers() -> None:
    for i in range(4):
        data = example_jpeg(i, scale=2)
        start = jpeg_scan_start(data)
        assert data.count(b"\xff\x00", start) > 10           # every photo has them
        assert gpu_decoded_bytes(data, PCFG) > 0, i


def test_restart_markers_are_legal_inside_the_scan() -> None:
    for save in ({"restart_marker_blocks": 4}, {"restart_marker_rows": 1}):
        data = example_jpeg(1, **save)
        assert sum(data.count(m) for m in RST) > 10, save
        assert gpu_decoded_bytes(data, PCFG) > 0, save


def test_a_stray_marker_in_the_scan_data_goes_to_the_cpu_which_names_it() -> None:
    good = example_jpeg(0)
    bad = with_stray_marker(good)
    assert bad.endswith(b"\xff\xd9") and len(bad) == len(good)     # no header check sees it
    assert gpu_decoded_bytes(bad, PCFG) == 0
    with pytest.raises(DecodeError) as err:
        load_sample(bad, PCFG)
    assert err.value.error_type == "CorruptImage"
    assert "broken data stream" in err.value.message


def test_the_scan_check_on_hand_made_cases() -> None:
    good = example_jpeg(2)
    start = jpeg_scan_start(good)
    body, eoi = good[:-2], good[-2:]
    assert eoi == b"\xff\xd9" and jpeg_single_clean_scan(good)
    assert jpeg_single_clean_scan(good + b"\x00" * 100)               # zero padding: fine
    assert not jpeg_single_clean_scan(good + b"\x01")                 # junk after the EOI
    assert not jpeg_single_clean_scan(body)                          # no EOI
    assert not jpeg_single_clean_scan(body + b"\xff" + eoi)          # fill bytes before it
    sos = good[good.find(b"\xff\xda"):start]                        # a second scan
    assert not jpeg_single_clean_scan(body + sos + good[start:start + 50] + eoi)
    assert not jpeg_single_clean_scan(good[:start])                   # headers only
    assert not jpeg_single_clean_scan(b"\xff\xd8\xff\xd9")
    # an SOS or EOI inside a segment (an EXIF thumbnail, a comment) is not the scan
    commented = example_jpeg(2, comment=b"x\xff\xda\x00\x0c\xff\xd9")
    assert commented.find(b"\xff\xda") < jpeg_scan_start(commented) - 14
    assert gpu_decoded_bytes(commented, PCFG) > 0


# --- end to end ---------------------------------------------------------------------------


def silent_nvjpeg(monkeypatch) -> None:
    """torchvision's decode_jpeg standing in for nvJPEG on an H100: a JPEG it cannot decode
    comes back as grey pixels of its declared size, without an error."""
    import torchvision.io

    from webssl_cli.preprocess.sniff import jpeg_size
    real = torchvision.io.decode_jpeg

    def one(data: torch.Tensor, *args, **kw) -> torch.Tensor:
        try:
            return real(data, *args, **kw)
        except RuntimeError:
            w, h = jpeg_size(data.numpy().tobytes())
            return torch.full((3, h, w), 128, dtype=torch.uint8)

    def decode(data, *args, **kw):
        if isinstance(data, list):
            return [one(d, *args, **kw) for d in data]
        return one(data, *args, **kw)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode)


def ledger(out: Path) -> dict[str, tuple[str, str]]:
    found = {}
    for rec in done_units(OutputLayout(out)).values():
        if rec.ledger is not None:
            for line in (out / rec.ledger.path).read_text().splitlines():
                e = json.loads(line)
                found[e["key"]] = (e["error_type"], e["message"])
    return found


def test_a_corrupt_jpeg_in_a_shard_is_recorded_under_decode_gpu_as_under_cpu(
        tmp_path: Path, monkeypatch) -> None:
    good = {f"g{i:02d}": img.make_jpeg(80 + 9 * i, 64 + 5 * i, i) for i in range(7)}
    bad = with_stray_marker(img.make_jpeg(96, 72, 3))
    assert all(gpu_decoded_bytes(d, PCFG) for d in good.values())
    extra = [{"__key__": k, "jpg": d} for k, d in list(good.items())[:4]]
    extra += [{"__key__": "corrupt", "jpg": bad}]
    extra += [{"__key__": k, "jpg": d} for k, d in list(good.items())[4:]]
    shard = img.write_shards(tmp_path / "wds", n_shards=1, per_shard=3, seed=7,
                             extra={0: extra})[0]
    cpu_out, gpu_out = tmp_path / "cpu", tmp_path / "gpu"
    cpu = extract(config([shard], cpu_out, batch=4, workers=1))
    assert cpu.exit_code == 0 and cpu.failures == 1

    silent_nvjpeg(monkeypatch)
    cfg = config([shard], gpu_out, batch=4, workers=1)
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, decode="gpu"))
    rank = detect_rank()
    res = RankRun(prepare(cfg, rank, "fp32"), rank, torch.device("cpu"), "fp32").run(StopFlag())
    assert res.exit_code == 0 and res.failures == 1 and res.images == 3 + len(good)

    key = f"{shard.stem}/corrupt"                        # keys name the shard
    failures = ledger(gpu_out)
    assert failures == ledger(cpu_out)
    assert list(failures) == [key] and failures[key][0] == "CorruptImage"
    assert "broken data stream" in failures[key][1]
    gpu_keys, _ = read_features(gpu_out)
    cpu_keys, _ = read_features(cpu_out)
    assert gpu_keys == cpu_keys and key not in gpu_keys
    assert {f"{shard.stem}/{k}" for k in good} <= set(gpu_keys)
    assert len(gpu_keys) == 3 + len(good)
