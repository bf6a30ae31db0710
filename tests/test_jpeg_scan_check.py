"""`--decode gpu` sends a JPEG to nvJPEG only when its entropy-coded data is one clean scan
ending at the EOI and its headers are self-consistent: nvJPEG decodes a stray marker in the
scan data silently into garbage (H100, 2026-11-27) where libjpeg on the CPU reports it, so such
files, and files with corrupt headers (DHT, DQT, SOF, SOS), are left to the CPU path."""
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
from webssl_cli.preprocess.jpeg_gpu_check import (jpeg_gpu_check, jpeg_gpu_unsafe,
                                                  jpeg_scan_start, jpeg_single_clean_scan)
from webssl_cli.preprocess.sniff import jpeg_frame
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
    assert jpeg_single_clean_scan(good + b"\x01\xff\xc4")            # anything after the EOI
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


# --- header checks ---------------------------------------------------------------------


def segment(data: bytes, marker: int) -> int:
    """Index of the first ``marker`` segment's 0xFF (as a segment walk finds it: not inside
    another segment)."""
    i = 2
    while True:
        assert data[i] == 0xFF
        if data[i + 1] == marker:
            return i
        i += 2 + ((data[i + 2] << 8) | data[i + 3])


def dht_count_corrupted(data: bytes) -> bytes:
    """The first DHT's first table: 32 codes of length 1 (its count byte was 0)."""
    out = bytearray(data)
    out[segment(data, 0xC4) + 5] = 0x20
    return bytes(out)


def sos_undefined_tables(data: bytes) -> bytes:
    """The SOS's first component: DC and AC Huffman table 3, never defined."""
    out = bytearray(data)
    out[segment(data, 0xDA) + 6] = 0x33
    return bytes(out)


def first_dqt_removed(data: bytes) -> bytes:
    """The SOF still names quantization table 0."""
    i = segment(data, 0xDB)
    return data[:i] + data[i + 2 + ((data[i + 2] << 8) | data[i + 3]):]


def sos_two_of_three(data: bytes) -> bytes:
    """SOS component count 3 -> 2, its length field unchanged."""
    out = bytearray(data)
    out[segment(data, 0xDA) + 4] = 2
    return bytes(out)


HEADER_CORRUPTIONS = {"DHT count byte": (dht_count_corrupted, "DHT"),
                      "SOS table selector": (sos_undefined_tables, "Huffman tables"),
                      "first DQT removed": (first_dqt_removed, "quantization table 0"),
                      "SOS 3 -> 2 components": (sos_two_of_three, "SOS length")}


@pytest.mark.parametrize("name", HEADER_CORRUPTIONS)
def test_a_corrupt_header_goes_to_the_cpu_which_names_it(name: str) -> None:
    corrupt, why = HEADER_CORRUPTIONS[name]
    good = example_jpeg(0)
    assert sum(good.count(m) for m in (b"\xff\xc4", b"\xff\xdb")) >= 4   # PIL: 4 DHT, 2 DQT
    assert jpeg_gpu_unsafe(good) is None
    bad = corrupt(good)
    assert bad != good and jpeg_single_clean_scan(bad)       # the scan check alone passes it
    assert jpeg_frame(bad) == jpeg_frame(good)               # so does the frame header
    assert why in jpeg_gpu_unsafe(bad)
    assert gpu_decoded_bytes(bad, PCFG) == 0
    with pytest.raises(DecodeError) as err:
        load_sample(bad, PCFG)
    assert err.value.error_type == "CorruptImage"


def test_header_checks_on_hand_made_cases() -> None:
    good = example_jpeg(3)
    sos, sof, dqt = segment(good, 0xDA), segment(good, 0xC0), segment(good, 0xDB)
    dht = segment(good, 0xC4)

    def patched(at: int, new: bytes) -> bytes:
        return good[:at] + new + good[at + len(new):]

    def reason(data: bytes) -> str:
        r = jpeg_gpu_unsafe(data)
        assert r is not None and gpu_decoded_bytes(data, PCFG) == 0
        return r
    assert "overfill" not in reason(patched(dht + 20, b"\x01"))        # one more 16-bit code:
    assert "DHT length" in reason(patched(dht + 20, b"\x01"))          # values run over
    assert "class" in reason(patched(dht + 4, b"\x20"))                # table class 2
    assert "DQT table" in reason(patched(dqt + 4, b"\x04"))            # table id 4
    assert "DQT length" in reason(patched(dqt + 3, bytes([good[dqt + 3] - 1])))
    assert "SOF length" in reason(patched(sof + 9, b"\x02"))           # Nf 3 -> 2
    assert "sampling" in reason(patched(sof + 11, b"\x50"))            # H = 5
    assert "ids repeat" in reason(patched(sof + 13, bytes([good[sof + 10]])))
    assert "quantization table 3" in reason(patched(sof + 12, b"\x03"))
    assert "not the frame's" in reason(patched(sos + 7, b"\x09"))      # component id 9
    assert "spectral" in reason(patched(sos + 11, b"\x00\x3f\x01"))    # Al = 1
    assert "spectral" in reason(patched(sos + 11, b"\x01\x3f\x00"))    # Ss = 1
    assert "fill bytes" in reason(good[:sos] + b"\xff" + good[sos:])
    assert "marker 0xcc" in reason(good[:sos] + b"\xff\xcc\x00\x04\x00\x00" + good[sos:])
    assert "second frame" in reason(good[:sos] + good[sof:dht] + good[sos:])
    assert "not baseline" in reason(example_jpeg(3, progressive=True))
    many = good[:2] + b"\xff\xfe\x00\x02" * 300 + good[2:]
    assert "more than 256 segments" in reason(many) and jpeg_single_clean_scan(many)
    # a restart marker in a scan without a restart interval (DRI)
    start = jpeg_scan_start(good)
    assert "clean scan" in reason(patched(start + 100, b"\xff\xd3"))
    # a truncated file, a cut segment
    assert "clean scan" in reason(good[:-2]) and "past the end" in reason(good[:sos + 5])
    assert reason(b"\x89PNG\r\n\x1a\n" + good[8:]).startswith("not a JPEG")
    frame, problem, length = jpeg_gpu_check(good)
    assert problem is None and frame == jpeg_frame(good) and length == len(good)
    # RGB-coded files (libjpeg does not convert them as YCbCr; nvJPEG was never tried on them)
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00"
    assert "RGB-coded" in reason(good[:2] + adobe + b"\x00" + good[2:])     # transform 0
    assert jpeg_gpu_unsafe(good[:2] + adobe + b"\x01" + good[2:]) is None   # 1: YCbCr
    ids = good[:sof + 10] + b"R" + good[sof + 11:sof + 13] + b"G" + good[sof + 14:sof + 16] + b"B"
    rgb = ids + good[sof + 17:sos + 5] + b"R" + good[sos + 6:sos + 7] + b"G" + \
        good[sos + 8:sos + 9] + b"B" + good[sos + 10:]
    assert "RGB-coded" in reason(rgb)


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "webssl"                                      # Make
    exif[0x0132] = "2026:11:27 12:00:00"                          # DateTime
    return exif.tobytes()


def _icc() -> bytes:
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


VALID = {**{f"q{q} subsampling={s}": (0, {"quality": q, "subsampling": s})
            for q in (20, 75, 95) for s in (0, 1, 2)},
         **{f"grey q{q}": (1, {"quality": q, "grey": True}) for q in (10, 60, 100)},
         "restart markers": (2, {"restart_marker_rows": 1}),
         "optimize=True": (3, {"optimize": True}),
         "optimize=True grey": (1, {"optimize": True, "grey": True}),
         "EXIF + ICC + comment": (2, {"exif": _exif, "icc_profile": _icc,
                                      "comment": b"made by a test"}),
         "ICC over several APP2 segments": (0, {"icc_profile": lambda: _icc() * 200})}


@pytest.mark.parametrize("name", VALID)
def test_valid_baseline_jpegs_still_go_to_the_gpu(name: str) -> None:
    i, save = VALID[name]
    save = {k: v() if callable(v) else v for k, v in save.items()}
    im = img.photo(i)
    if save.pop("grey", False):
        im = im.convert("L")
    data = img.encode(im, "JPEG", **{"quality": 90, **save})
    assert jpeg_gpu_unsafe(data) is None, name
    assert gpu_decoded_bytes(data, PCFG) == im.width * im.height * 3
    if "icc_profile" in save:
        assert data.count(b"ICC_PROFILE") == (2 if "several" in name else 1)
    if "restart" in name:
        assert b"\xff\xdd" in data and sum(data.count(m) for m in RST) > 10


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
    # cpu_share=0: no worker picks the corrupt file for a CPU decode by chance, so only the
    # scan check keeps it from the (silent) GPU decode
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, decode="gpu",
                                                               cpu_share=0.0))
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


def test_the_check_never_raises_on_damaged_bytes() -> None:
    """It runs in the workers on every sample before any decode: a truncation or a flipped
    byte anywhere must give an answer, never an exception (one would end the shard)."""
    import random

    from webssl_cli.pipeline.gpu_decode import gpu_decoded_bytes
    rng = random.Random(7)
    pcfg = PreprocessConfig(224)
    sources = [example_jpeg(0), example_jpeg(1, optimize=True, restart_marker_rows=1)]
    tried = unsafe = 0
    for good in sources:
        start = jpeg_scan_start(good)
        for cut in range(0, start + 40):           # every truncation through the headers
            data = good[:cut]
            tried += 1
            unsafe += jpeg_gpu_unsafe(data) is not None
            gpu_decoded_bytes(data, pcfg)
        for _ in range(1500):                      # flips, mostly in the headers
            data = bytearray(good)
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(min(len(data), start + 64))] = rng.randrange(256)
            tried += 1
            unsafe += jpeg_gpu_unsafe(bytes(data)) is not None
            gpu_decoded_bytes(bytes(data), pcfg)
    assert unsafe > tried // 2          # most damage is seen; none of it raised
    good = sources[0]
    headers = good[:good.find(b"\xff\xda")]
    for tail in (b"\xff\xda\x00\x02", b"\xff\xdd\x00\x02"):   # a short SOS / DRI ending the data
        assert jpeg_gpu_unsafe(headers + tail) is not None
        assert gpu_decoded_bytes(headers + tail, pcfg) == 0


def test_what_follows_the_eoi_is_cut_off_and_the_image_goes_to_the_gpu() -> None:
    """Phone and camera originals carry data after the EOI (Samsung trailers, Motion Photo
    video, Multi-Picture second images, padding): decoders stop at the EOI, so nvJPEG gets
    the bytes up to it and decodes what libjpeg decodes from the whole file."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from webssl_cli.pipeline.gpu_decode import gpu_route
    good = example_jpeg(1)
    trailers = {"samsung": b"\x00\x00SEFH" + bytes(range(256)) * 4 + b"SEFT",
                "second picture (MPF)": example_jpeg(2),
                "padding": b"\r\n\xff\xff\x00",
                "motion video": b"\x00\x00\x00\x18ftypmp42" + b"\xff\xd8\xff\xe0" * 50}
    want = decode_jpeg(torch.frombuffer(bytearray(good), dtype=torch.uint8), ImageReadMode.RGB)
    for name, tail in trailers.items():
        data = good + tail
        decoded, length = gpu_route(data, PCFG)
        assert decoded > 0 and length == len(good), name
        cut = torch.frombuffer(bytearray(data[:length]), dtype=torch.uint8)
        assert torch.equal(decode_jpeg(cut, ImageReadMode.RGB), want), name
        assert torch.equal(load_sample(data, PCFG), load_sample(good, PCFG)), name
    assert gpu_route(good, PCFG)[1] == len(good)
