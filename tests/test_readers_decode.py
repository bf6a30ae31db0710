"""Readers + decode together: every broken input becomes a recorded failure or a correct RGB
image, never a crash, in a tar shard, a folder and a parquet file; and the same path inside a
real torch DataLoader with worker processes (ReadError crosses the process boundary)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tests.helpers import images as gen
from webssl_cli.config import InputConfig, PreprocessConfig
from webssl_cli.readers import ReadError, iter_samples, plan_units
from webssl_cli.units import Failure, Unit
from webssl_cli.preprocess import DecodeError, load_sample, worker_init

PRE = PreprocessConfig(resolution=224)


def process(unit: Unit, cfg: InputConfig) -> tuple[dict[str, torch.Tensor], dict[str, Failure]]:
    rows, failures = {}, {}
    for s in iter_samples(unit, cfg):
        if s.data is None:
            failures[s.key] = Failure(s.key, s.source, "read", s.error_type, s.error, s.index)
            continue
        try:
            rows[s.key] = load_sample(s.data, PRE)
        except DecodeError as exc:
            failures[s.key] = Failure(s.key, s.source, "decode", exc.error_type, exc.message, s.index)
    return rows, failures


def check_outcome(rows, failures, n_samples, expect_fail: dict[str, str]):
    assert len(rows) + len(failures) == n_samples
    assert {k: f.error_type for k, f in failures.items()} == expect_fail
    for x in rows.values():
        assert x.shape == (3, 224, 224) and x.dtype == torch.uint8


@pytest.fixture(scope="module")
def mix() -> dict[str, bytes]:
    files = gen.broken_and_special()
    files["good.jpg"] = gen.make_jpeg(300, 200)
    return files


def test_broken_mix_in_a_tar_shard(tmp_path, mix):
    extra = [{"__key__": n.replace(".", "_"), Path(n).suffix[1:]: data} for n, data in mix.items()]
    extra.append({"__key__": "noimage", "txt": "caption only"})
    (shard,) = gen.write_shards(tmp_path, 1, 2, extra={0: extra})
    c = InputConfig(inputs=(str(shard),), image_key="jpg,png,webp,gif,bmp,tiff")
    (unit,) = plan_units(c)
    rows, failures = process(unit, c)
    expect = {f"shard-000000/{n.replace('.', '_')}": t for n, (_, t) in gen.BROKEN.items()}
    expect["shard-000000/noimage"] = "NoImage"
    check_outcome(rows, failures, len(mix) + 3, expect)


def test_broken_mix_in_a_folder_and_a_list_with_a_missing_file(tmp_path, mix):
    for name, data in mix.items():
        (tmp_path / "mix").mkdir(exist_ok=True)
        (tmp_path / "mix" / name).write_bytes(data)
    c = InputConfig(inputs=(str(tmp_path / "mix"),))
    (unit,) = plan_units(c)
    rows, failures = process(unit, c)
    check_outcome(rows, failures, len(mix), {n: t for n, (_, t) in gen.BROKEN.items()})
    lst = tmp_path / "list.txt"
    lst.write_text("mix/good.jpg\nmix/empty.jpg\nmix/gone.jpg\n")
    c = InputConfig(inputs=(str(lst),))
    rows, failures = process(plan_units(c)[0], c)
    check_outcome(rows, failures, 3, {"mix/empty.jpg": "EmptyImage", "mix/gone.jpg": "FileNotFoundError"})
    assert failures["mix/gone.jpg"].stage == "read"


def test_broken_mix_in_parquet(tmp_path, mix):
    names = sorted(mix)
    path = gen.write_parquet(tmp_path / "mix.parquet", [mix[n] for n in names] + [None],
                             keys=names + ["null"])
    c = InputConfig(inputs=(str(path),), key_column="key")
    (unit,) = plan_units(c)
    rows, failures = process(unit, c)
    expect = {n: t for n, (_, t) in gen.BROKEN.items()}
    expect["null"] = "MissingImage"
    check_outcome(rows, failures, len(mix) + 1, expect)


class UnitsDataset(IterableDataset):
    """Units dealt round-robin to DataLoader workers; yields (key, image or None, error type)."""

    def __init__(self, units: list[Unit], cfg: InputConfig) -> None:
        self.units, self.cfg = units, cfg

    def __iter__(self):
        info = get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        for unit in self.units[wid::n]:
            for s in iter_samples(unit, self.cfg):
                if s.data is None:
                    yield s.key, None, s.error_type
                    continue
                try:
                    yield s.key, load_sample(s.data, PRE), None
                except DecodeError as exc:
                    yield s.key, None, exc.error_type


def test_dataloader_workers_decode_and_report_read_errors(tmp_path):
    shards = gen.write_shards(tmp_path / "wds", n_shards=2, per_shard=4)
    c = InputConfig(inputs=(str(tmp_path / "wds"),))
    loader = DataLoader(UnitsDataset(plan_units(c), c), batch_size=None, num_workers=2,
                        worker_init_fn=worker_init)
    got = {key: img for key, img, err in loader}
    assert len(got) == 8 and all(img.shape == (3, 224, 224) for img in got.values())
    data = shards[1].read_bytes()
    (tmp_path / "wds" / "shard-000001.tar").write_bytes(data[: len(data) // 2])
    loader = DataLoader(UnitsDataset(plan_units(c), c), batch_size=None, num_workers=2,
                        worker_init_fn=worker_init)
    with pytest.raises(ReadError, match="truncated"):
        list(loader)


def test_a_code_error_while_decoding_fails_the_unit_instead_of_every_sample(tmp_path):
    """A NameError/ImportError is webssl's or its install's fault, never the image's: it must
    not be written off as bad data sample by sample in a unit marked done. A real PIL image
    plugin (PIL's own extension point) raises it for files with its magic bytes; another
    plugin raising ValueError is an ordinary bad sample."""
    from PIL import Image, ImageFile

    from webssl_cli.pipeline.loader import WorkItem, iter_part

    def plugin(name: bytes, error: Exception):
        class Broken(ImageFile.ImageFile):
            format = name.decode()

            def _open(self):
                raise error
        Image.register_open(Broken.format, Broken, lambda head: head.startswith(name))

    plugin(b"WSNAMEERR", NameError("name 'stat' is not defined"))
    plugin(b"WSVALUEERR", ValueError("bad header"))
    for name, data in (("a.png", gen.make_png(8, 8)), ("b.png", b"WSVALUEERR" + bytes(50)),
                       ("c.png", b"WSNAMEERR" + bytes(50))):
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / name).write_bytes(data)
    c = InputConfig(inputs=(str(tmp_path / "d"),))
    (unit,) = plan_units(c)
    batches = list(iter_part(WorkItem(unit, 0, 1), c, PreprocessConfig(28), 8))
    end = batches[-1]
    assert end.end and end.read_error is not None and "NameError" in end.read_error
    failures = [f for b in batches for f in b.failures]
    assert [f.key for f in failures] == ["b.png"] and "bad header" in failures[0].message
