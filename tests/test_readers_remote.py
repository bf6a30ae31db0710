"""Readers over the network, against real servers on 127.0.0.1: the same WebDataset shards
from S3 (SeaweedFS), plain HTTP and pipe:cat give the same samples; errors are clear."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import images as gen
from tests.helpers.servers import http_server, s3_client, upload_folder
from webssl_cli.config import InputConfig
from webssl_cli.errors import UsageError
from webssl_cli.readers import ReadError, iter_samples, plan_units

BUCKET = "webssl-readers"


def samples_of(c: InputConfig) -> list[tuple[str, bytes | None]]:
    return [(s.key, s.data) for u in plan_units(c) for s in iter_samples(u, c)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("remote")
    gen.write_shards(root / "wds", n_shards=3, per_shard=4)
    for i in range(3):
        (root / "imgs").mkdir(exist_ok=True)
        (root / "imgs" / f"{i}.jpg").write_bytes(gen.make_jpeg(20, 20, seed=i))
    gen.write_parquet(root / "pq" / "part-0.parquet", [gen.make_png(9, 9, seed=i) for i in range(5)])
    return root


@pytest.fixture(scope="module")
def uploaded(s3_endpoint, data) -> str:
    endpoint = s3_endpoint[0]
    for sub in ("wds", "imgs", "pq"):
        upload_folder(endpoint, BUCKET, f"{sub}/", data / sub)
    return endpoint


@pytest.fixture(scope="module")
def http_base(data):
    with http_server(data) as base:
        yield base


def test_s3_prefix_is_listed_and_read_with_the_endpoint_option(s3_env, uploaded, data):
    c = InputConfig(inputs=(f"s3://{BUCKET}/wds/",), s3_endpoint_url=uploaded, keep_json=True)
    units = plan_units(c)
    assert [(u.kind, u.source, u.name) for u in units] == [
        ("tar", f"s3://{BUCKET}/wds/shard-{i:06d}.tar", f"shard-{i:06d}") for i in range(3)]
    local = InputConfig(inputs=(str(data / "wds"),), keep_json=True)
    assert samples_of(c) == samples_of(local)
    first = next(iter_samples(units[0], c))
    assert first.meta == {"caption": "photo 0/0", "n": 0}


def test_s3_endpoint_from_environment_glob_and_braces(s3_env, uploaded, monkeypatch, data):
    monkeypatch.setenv("WEBSSL_S3_ENDPOINT_URL", uploaded)
    local = samples_of(InputConfig(inputs=(str(data / "wds"),)))
    for spec in (f"s3://{BUCKET}/wds/*.tar", f"s3://{BUCKET}/wds/shard-{{000000..000002}}.tar"):
        assert samples_of(InputConfig(inputs=(spec,))) == local
    with pytest.raises(UsageError, match="1 of 4 names do not exist"):
        plan_units(InputConfig(inputs=(f"s3://{BUCKET}/wds/shard-{{000000..000003}}.tar",)))
    monkeypatch.delenv("WEBSSL_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", uploaded)        # botocore's own variable
    assert samples_of(InputConfig(inputs=(f"s3://{BUCKET}/wds/shard-000001.tar",))) == local[4:8]


def test_s3_images_and_parquet(s3_env, uploaded, data):
    c = InputConfig(inputs=(f"s3://{BUCKET}/imgs/",), s3_endpoint_url=uploaded)
    (unit,) = plan_units(c)
    assert unit.kind == "files" and unit.source == f"s3://{BUCKET}/imgs/"
    got = list(iter_samples(unit, c))
    assert [s.key for s in got] == ["0.jpg", "1.jpg", "2.jpg"]
    assert got[1].data == (data / "imgs" / "1.jpg").read_bytes()
    c = InputConfig(inputs=(f"s3://{BUCKET}/pq/",), s3_endpoint_url=uploaded, shard_size=3)
    units = plan_units(c)
    assert [u.row_range for u in units] == [(0, 3), (3, 5)]
    assert [d for _, d in samples_of(c)] == [gen.make_png(9, 9, seed=i) for i in range(5)]


def test_s3_errors_are_usage_errors(s3_env, uploaded, tmp_path, monkeypatch):
    for spec, match in ((f"s3://no-such-bucket-{tmp_path.name.lower()[-8:]}/x/", "cannot list"),
                        (f"s3://{BUCKET}/absent/", "nothing under")):
        with pytest.raises(UsageError, match=match) as info:
            plan_units(InputConfig(inputs=(spec,), s3_endpoint_url=uploaded))
        assert spec in str(info.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(UsageError, match="cannot list"):
        plan_units(InputConfig(inputs=(f"s3://{BUCKET}/wds/",), s3_endpoint_url=uploaded))


def test_s3_object_deleted_after_planning_is_a_read_error(s3_env, uploaded, data):
    client = s3_client(uploaded)
    client.put_object(Bucket=BUCKET, Key="tmp/gone.tar", Body=(data / "wds" / "shard-000000.tar").read_bytes())
    c = InputConfig(inputs=(f"s3://{BUCKET}/tmp/gone.tar",), s3_endpoint_url=uploaded)
    (unit,) = plan_units(c)
    client.delete_object(Bucket=BUCKET, Key="tmp/gone.tar")
    with pytest.raises(ReadError, match="gone.tar"):
        list(iter_samples(unit, c))


def test_http_shards_braces_and_pipe_match_local(http_base, data):
    local = samples_of(InputConfig(inputs=(str(data / "wds"),)))
    url = f"{http_base}/wds/shard-{{000000..000002}}.tar"
    c = InputConfig(inputs=(url,))
    units = plan_units(c)
    assert [u.source for u in units] == [f"{http_base}/wds/shard-{i:06d}.tar" for i in range(3)]
    assert samples_of(c) == local
    piped = InputConfig(inputs=(f"pipe:cat {data}/wds/shard-{{000000..000002}}.tar",))
    assert samples_of(piped) == local


def test_http_errors(http_base, data):
    with pytest.raises(UsageError, match="HTTP 404"):
        plan_units(InputConfig(inputs=(f"{http_base}/wds/absent-{{0..3}}.tar",)))
    size = (data / "wds" / "shard-000002.tar").stat().st_size
    cut = InputConfig(inputs=(f"{http_base}/_cut/{size // 2}/wds/shard-000002.tar",))
    (unit,) = plan_units(cut)
    got = []
    with pytest.raises(ReadError) as info:
        for s in iter_samples(unit, cut):
            got.append(s)
    assert len(got) < 4 and "after" in str(info.value)


def test_list_of_urls_records_404_per_sample(http_base, tmp_path):
    lst = tmp_path / "urls.txt"
    lst.write_text(f"{http_base}/imgs/2.jpg\n{http_base}/imgs/0.jpg\n{http_base}/imgs/404.jpg\n")
    c = InputConfig(inputs=(str(lst),))
    (unit,) = plan_units(c)
    got = list(iter_samples(unit, c))
    assert [s.key for s in got] == [f"{http_base}/imgs/{n}.jpg" for n in ("0", "2", "404")]
    assert got[0].data and got[1].data
    assert got[2].data is None and got[2].error_type == "HTTPError" and "404" in got[2].error


def test_http_list_is_read_by_its_extension_only(http_base, data):
    (data / "lists").mkdir(exist_ok=True)
    body = f"{http_base}/imgs/1.jpg\n{http_base}/imgs/0.jpg\n"
    for name in ("urls.txt", "urls.bin", "urls"):
        (data / "lists" / name).write_text(body)
    got = samples_of(InputConfig(inputs=(f"{http_base}/lists/urls.txt",)))
    assert [k for k, _ in got] == [f"{http_base}/imgs/{n}.jpg" for n in ("0", "1")]
    assert all(b for _, b in got)
    for name in ("urls.bin", "urls"):
        with pytest.raises(UsageError, match=r"unknown input kind: .*\.txt, \.lst, \.list"):
            plan_units(InputConfig(inputs=(f"{http_base}/lists/{name}",)))


def test_s3_shards_read_in_forked_dataloader_workers(s3_env, uploaded, data):
    import torch.utils.data as tud

    c = InputConfig(inputs=(f"s3://{BUCKET}/wds/",), s3_endpoint_url=uploaded)
    units = plan_units(c)          # the parent process has used S3 before forking

    class Shards(tud.IterableDataset):
        def __iter__(self):
            info = tud.get_worker_info()
            for unit in units[info.id::info.num_workers]:
                for s in iter_samples(unit, c):
                    yield s.key, s.data

    got = dict(tud.DataLoader(Shards(), batch_size=None, num_workers=2))
    assert got == dict(samples_of(InputConfig(inputs=(str(data / "wds"),))))
