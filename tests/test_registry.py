"""Registry records: exact parameter counts on the meta device, name resolution."""
from __future__ import annotations

import pytest
import torch

from webssl_cli.backbone import WebSSLViT
from webssl_cli.errors import ModelNotFoundError
from webssl_cli.registry import MODELS, ArchSpec, param_count, resolve

# Parameter counts from shared/MODELS.md (official code), independent of our formula.
EXPECTED = {
    "dino300m-full2b-224": 303_655_168, "dino300m-light2b-224": 303_655_168,
    "dino1b-full2b-224": 1_134_771_200, "dino2b-full2b-224": 2_084_237_568,
    "dino2b-light2b-224": 2_084_237_568, "dino2b-heavy2b-224": 2_084_237_568,
    "dino3b-full2b-224": 2_948_317_184, "dino3b-light2b-224": 2_948_317_184,
    "dino3b-heavy2b-224": 2_948_317_184, "dino5b-full2b-224": 4_938_338_816,
    "dino7b-full8b-224": 6_450_170_880, "dino7b-full8b-378": 6_452_108_288,
    "dino7b-full8b-518": 6_454_729_728, "dino1b-in1k-224": 1_134_771_200,
    "dino2b-in1k-224": 2_084_237_568, "dino3b-in1k-224": 2_948_317_184,
    "mae300m-full2b-224": 303_301_632, "mae700m-full2b-224": 630_764_800,
    "mae1b-full2b-224": 1_134_564_864, "mae2b-full2b-224": 2_084_019_840,
    "mae3b-full2b-224": 2_948_047_872,
}


def test_registry_has_every_released_model() -> None:
    assert {m.name for m in MODELS} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_meta_model_parameter_count(name: str) -> None:
    rec = resolve(name).record
    with torch.device("meta"):
        model = WebSSLViT(rec.arch)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[name]
    assert param_count(rec.arch) == EXPECTED[name]


@pytest.mark.parametrize("typed", ["dino2b-full2b-224", "WEBSSL-DINO2B-FULL2B-224",
                                   "facebook/webssl-dino2b-full2b-224", "webssl_dino2b_full2b_224.pth"])
def test_names_resolve_in_every_form(typed: str) -> None:
    r = resolve(typed)
    assert r.record.name == "dino2b-full2b-224" and r.notice is None
    assert r.record.hf_repo == "facebook/webssl-dino2b-full2b-224"
    assert r.record.pth_url().endswith("/webssl_dino2b_full2b_224.pth")


def test_seed_alias_384_resolves_to_378_with_notice() -> None:
    r = resolve("webssl-dino7b-full8b-384")
    assert r.record.name == "dino7b-full8b-378"
    assert "378" in r.notice and "multiple" in r.notice


def test_never_released_mae7b_refused() -> None:
    with pytest.raises(ModelNotFoundError, match="never released.*mae3b-full2b-224"):
        resolve("mae7b-full2b-224")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ModelNotFoundError, match="Did you mean: dino1b-full2b-224"):
        resolve("dino1b-ful2b-224")


def test_dino3b_has_five_chunks_like_the_checkpoint() -> None:
    spec = resolve("dino3b-full2b-224").record.arch
    assert spec.depth == 26 and spec.depth // spec.block_chunks == 6   # 4 chunks of 6 + 1 of 2


def test_spec_from_dict_ignores_unknown_and_validates() -> None:
    from webssl_cli.errors import UsageError
    s = ArchSpec.from_dict({"family": "dino", "embed_dim": 64, "depth": 2, "num_heads": 4,
                            "patch_size": 14, "img_size": 56, "seed": 3, "cases": []})
    assert s.ffn == "swiglu" and s.ffn_hidden == 176 and s.layerscale and s.mask_token
    with pytest.raises(UsageError, match="missing required field"):
        ArchSpec.from_dict({"family": "mae"})
    with pytest.raises(UsageError, match="not divisible"):
        ArchSpec.from_dict({"family": "mae", "embed_dim": 65, "depth": 1, "num_heads": 4,
                            "patch_size": 16, "img_size": 64})


def test_search_or_fail_and_suggest() -> None:
    from webssl_cli.registry import search_or_fail, suggest
    assert [m.name for m in search_or_fail("dino7b")][0] == "dino7b-full8b-224"
    with pytest.raises(ModelNotFoundError, match="no model matches 'zzz'"):
        search_or_fail("zzz")
    assert suggest("dino1b-full2b-22")[0] == "dino1b-full2b-224"


def test_choose_given_keeps_model_and_model_config_apart(tmp_path) -> None:
    from pathlib import Path

    from webssl_cli.backbone.factory import choose, choose_given
    from webssl_cli.errors import UsageError
    spec = Path(__file__).parent / "fixtures" / "official" / "dino-tiny" / "spec.json"
    assert choose_given(None, spec).name == "custom:spec.json"
    assert choose_given("dino300m-full2b-224", None).name == "dino300m-full2b-224"
    with pytest.raises(UsageError, match="--model takes a registry name"):
        choose_given(str(spec), None)
    with pytest.raises(UsageError, match="use --model dino300m-full2b-224"):
        choose_given(None, "dino300m-full2b-224")
    with pytest.raises(UsageError, match="not both"):
        choose_given("dino300m-full2b-224", spec)
    # the Python API's choose() still takes either
    assert choose(str(spec)).name == "custom:spec.json"
    assert choose("dino300m-full2b-224").name == "dino300m-full2b-224"
    with pytest.raises(UsageError, match="is a folder"):
        choose(str(tmp_path) + "/")


def test_spec_validate_refuses_nonsense() -> None:
    import dataclasses

    from webssl_cli.errors import UsageError
    good = resolve("dino300m-full2b-224").record.arch
    good.validate()
    for field, value, msg in (("depth", 0, "depth must be a positive integer"),
                              ("num_heads", 7, "not divisible"),
                              ("patch_size", 0, "patch_size must be a positive integer")):
        with pytest.raises(UsageError, match=msg):
            dataclasses.replace(good, **{field: value}).validate("x.json")


def test_suggest_falls_back_to_names_starting_with_then_containing_the_text() -> None:
    from webssl_cli.registry import suggest
    assert suggest("dino300") == ["dino300m-full2b-224", "dino300m-light2b-224"]
    assert suggest("dino3b") == ["dino3b-full2b-224", "dino3b-light2b-224",
                                 "dino3b-heavy2b-224", "dino3b-in1k-224"]
    assert suggest("full8b") == ["dino7b-full8b-224", "dino7b-full8b-378", "dino7b-full8b-518"]
    assert suggest("zzz") == [] and suggest("") == []
    with pytest.raises(ModelNotFoundError, match="Did you mean: dino300m-full2b-224, "
                                                 "dino300m-light2b-224"):
        resolve("DINO300")
