"""Pretrained names through the Hugging Face Hub cache, with no network: a real cache layout on
disk read with HF_HUB_OFFLINE=1, and a loopback server standing in for the Hub. Numpy only."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.checkpoint_factories import as_hf, random_canonical
from tests.hub_cache import (
    TINY_PRESETS, cache_repo, loopback_hub, register_tiny_presets, safetensors_bytes, timm_config_json, use_hub,
)
from vit_common import TIMM, CheckpointError, ConfigError, ViTConfig, WeightsMismatchError, get_config, list_models
from vit_common import read_checkpoint
from vit_common.config.cards import ADDED, TAGS, PresetCard
from vit_common.config.presets import CARDS
from vit_common.formats.hub import DEFAULT_TAGS, parse_pretrained, pretrained_source

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.fixture
def tiny_presets(monkeypatch):
    """test_vit_tiny (default tag test_in1k) and swin_test_tiny (ms_test): the rows a family adds."""
    register_tiny_presets(monkeypatch)


@pytest.fixture
def hub(tmp_path, monkeypatch, tiny_presets):
    """An empty cache, read offline."""
    cache = tmp_path / "hub"
    use_hub(monkeypatch, cache)
    return cache


def timm_repo(name: str, tag: str, *, seed: int = 0, config: bool = True, **config_json):
    """(canonical weights, the repository's files): timm's model.safetensors and config.json."""
    cfg = get_config(name)
    w = random_canonical(cfg, seed)
    files = {"model.safetensors": safetensors_bytes(TIMM.export(w, cfg))}
    if config:
        files["config.json"] = timm_config_json(name, cfg.num_classes, tag=tag, img_size=cfg.img_size, **config_json)
    return w, files


def assert_same(weights: dict, want: dict) -> None:
    assert weights.keys() == want.keys()
    for k, v in want.items():
        np.testing.assert_array_equal(weights[k], v, err_msg=k)


def test_every_preset_has_a_default_tag_row():
    """A family table's presets come with their rows in cards.TAGS (None: timm publishes no weights),
    and no row names a preset that is gone; whole cards (ADDED) carry their own."""
    assert sorted(set(list_models()) - set(DEFAULT_TAGS)) == []
    assert set(TAGS) == set(list_models()) - {card.name for card in ADDED}
    assert all(DEFAULT_TAGS[name] == CARDS[name].tag for name in list_models())


def test_names_resolve_to_timm_repositories():
    assert parse_pretrained("timm:vit_base_patch16_224").repo_id == "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
    assert parse_pretrained("timm:swin_tiny_patch4_window7_224").repo_id == "timm/swin_tiny_patch4_window7_224.ms_in1k"
    repo = parse_pretrained("timm:deit_small_patch16_224.fb_in1k@abc")
    assert (repo.repo_id, repo.revision, repo.architecture) == ("timm/deit_small_patch16_224.fb_in1k", "abc",
                                                                "deit_small_patch16_224")
    repo = parse_pretrained("hf-hub:google/vit-base-patch16-224")
    assert (repo.repo_id, repo.revision, repo.architecture) == ("google/vit-base-patch16-224", None, None)
    assert parse_pretrained("hf_hub:timm/x.y").repo_id == "timm/x.y"  # timm's older spelling
    assert pretrained_source("vit_base_patch16_224.augreg_in1k") == "timm:vit_base_patch16_224.augreg_in1k"
    assert pretrained_source("hf-hub:org/repo") == "hf-hub:org/repo"


def test_family_default_tags_follow_timms_first_tag_with_weights():
    """A few rows read off timm's default_cfgs (deit.py, vision_transformer.py)."""
    assert parse_pretrained("timm:deit3_small_patch16_224").repo_id == "timm/deit3_small_patch16_224.fb_in1k"
    assert parse_pretrained("timm:vit_small_patch14_reg4_dinov2").repo_id == (
        "timm/vit_small_patch14_reg4_dinov2.lvd142m")
    assert parse_pretrained("timm:vit_so400m_patch14_siglip_gap_896").repo_id == (
        "timm/vit_so400m_patch14_siglip_gap_896.pali_pt")
    assert parse_pretrained("timm:aimv2_large_patch14_336").repo_id == "timm/aimv2_large_patch14_336.apple_pt"


def test_quickgelu_names_read_the_plain_clip_repository():
    """timm keeps the weights of a *_clip_quickgelu_* name under the name without _quickgelu."""
    repo = parse_pretrained("timm:vit_base_patch32_clip_quickgelu_224")
    assert (repo.repo_id, repo.architecture) == ("timm/vit_base_patch32_clip_224.laion400m_e32",
                                                 "vit_base_patch32_clip_quickgelu_224")
    assert parse_pretrained("timm:vit_large_patch14_clip_quickgelu_336.openai").repo_id == (
        "timm/vit_large_patch14_clip_336.openai")


def test_a_quickgelu_name_runs_the_plain_repositorys_weights_with_quickgelu(hub, monkeypatch):
    clip = dict(TINY_PRESETS["test_vit_tiny"][0], pre_norm=True, norm_eps=1e-5)
    monkeypatch.setitem(CARDS, "vit_test_clip_32", PresetCard("vit_test_clip_32", ViTConfig, clip))
    monkeypatch.setitem(CARDS, "vit_test_clip_quickgelu_32", PresetCard(
        "vit_test_clip_quickgelu_32", ViTConfig, dict(clip, act_layer="quick_gelu"), tag="openai"))
    w, files = timm_repo("vit_test_clip_32", "openai")  # config.json names the plain architecture
    cache_repo(hub, "timm/vit_test_clip_32.openai", files)
    ckpt = read_checkpoint("timm:vit_test_clip_quickgelu_32")
    assert ckpt.config == get_config("vit_test_clip_quickgelu_32") and ckpt.config.act_layer == "quick_gelu"
    assert ckpt.meta["architecture"] == "vit_test_clip_quickgelu_32"
    assert_same(ckpt.weights, w)


@pytest.mark.parametrize("name, message", [
    ("timm:vit_base_patch16_gap_224", "timm publishes no pretrained weights for vit_base_patch16_gap_224"),
    ("hf-hub:just-a-name", "expected hf-hub:ORG/REPO"),
    ("timm:vit_small_patch16_224@a@b", "at most one '@REVISION'"),
])
def test_bad_names_say_why(name, message):
    with pytest.raises(CheckpointError, match=message):
        parse_pretrained(name)


def test_an_unknown_architecture_suggests_known_ones():
    with pytest.raises(ConfigError, match="did you mean vit_base_patch16_224"):
        parse_pretrained("timm:vit_bse_patch16_224.augreg_in1k")


def test_a_tagged_name_without_pretrained_says_how_to_load_it():
    with pytest.raises(ConfigError, match="pretrained=True"):
        get_config("vit_base_patch16_224.augreg_in21k")


def test_bare_name_reads_the_default_tag_from_the_cache(hub):
    w, files = timm_repo("test_vit_tiny", "test_in1k", mean=IMAGENET["mean"], std=IMAGENET["std"])
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", files)
    ckpt = read_checkpoint("timm:test_vit_tiny")
    assert ckpt.config == get_config("test_vit_tiny")
    assert_same(ckpt.weights, w)
    assert ckpt.meta["source"] == "hf-hub:timm/test_vit_tiny.test_in1k"
    assert ckpt.meta["source_layout"] == "timm" and ckpt.meta["architecture"] == "test_vit_tiny"
    assert ckpt.meta["preprocess"] == dict(resize="shorter_side", crop_pct=0.9, interpolation="bicubic",
                                           mean=list(IMAGENET["mean"]), std=list(IMAGENET["std"]))


def test_name_and_tag_read_a_swin_repository(hub):
    w, files = timm_repo("swin_test_tiny", "other_tag", seed=1)
    cache_repo(hub, "timm/swin_test_tiny.other_tag", files)
    ckpt = read_checkpoint("timm:swin_test_tiny.other_tag")
    assert ckpt.config == get_config("swin_test_tiny")
    assert_same(ckpt.weights, w)


def test_hf_hub_timm_repository_takes_its_class_count_and_model_args(hub):
    """config.json's num_classes and model_args build the architecture (here 5 classes at 64 px)."""
    cfg = get_config("test_vit_tiny", num_classes=5, img_size=64)
    w = random_canonical(cfg)
    config = json.loads(timm_config_json("test_vit_tiny", 5, tag="ft", img_size=64))
    config["model_args"] = {"img_size": 64, "dynamic_img_size": False}
    cache_repo(hub, "someone/tiny-ft", {"model.safetensors": safetensors_bytes(TIMM.export(w, cfg)),
                                         "config.json": json.dumps(config).encode()})
    ckpt = read_checkpoint("hf-hub:someone/tiny-ft")
    assert ckpt.config == cfg
    assert_same(ckpt.weights, w)


def test_a_cache_holding_only_the_weights_serves_timm_names(hub):
    """timm.create_model(pretrained=True) caches model.safetensors alone; the class count then
    comes from the head."""
    w, files = timm_repo("test_vit_tiny", "in21k", config=False)
    cache_repo(hub, "timm/test_vit_tiny.in21k", files)
    ckpt = read_checkpoint("timm:test_vit_tiny.in21k")
    assert ckpt.config == get_config("test_vit_tiny") and "preprocess" not in ckpt.meta
    assert_same(ckpt.weights, w)


def test_hf_hub_transformers_repository(hub):
    """config.json + model.safetensors in transformers' names: the heads and image size the
    shapes cannot say come from config.json, as do the class names."""
    cfg = get_config("test_vit_tiny", distilled=True)
    w = random_canonical(cfg, seed=2)
    labels = {str(i): f"class {i}" for i in range(10)}
    config = dict(model_type="deit", architectures=["DeiTForImageClassificationWithTeacher"], hidden_size=48,
                  num_hidden_layers=2, num_attention_heads=3, intermediate_size=192, image_size=32, patch_size=8,
                  id2label=labels)
    cache_repo(hub, "someone/deit-tiny", {"model.safetensors": safetensors_bytes(as_hf(w, cfg)),
                                           "config.json": json.dumps(config).encode()})
    ckpt = read_checkpoint("hf-hub:someone/deit-tiny")
    # config.json gives no layer_norm_eps: transformers builds the model with its default, 1e-12;
    # other image sizes follow transformers' interpolation rule (docs/any-size.md).
    assert ckpt.config == cfg.replace(norm_eps=1e-12, pos_embed_interp="transformers")
    assert ckpt.meta["source_layout"] == "hf"
    assert ckpt.meta["class_names"] == [f"class {i}" for i in range(10)]
    assert_same(ckpt.weights, w)


def test_unknown_transformers_model_type_is_named(hub):
    cache_repo(hub, "someone/other", {"model.safetensors": safetensors_bytes(as_hf(random_canonical(
        get_config("test_vit_tiny")), get_config("test_vit_tiny"))), "config.json": b'{"model_type": "beit"}'})
    with pytest.raises(CheckpointError, match="hf-hub:someone/other: a transformers 'beit' model"):
        read_checkpoint("hf-hub:someone/other")


def test_config_json_naming_another_architecture_is_refused(hub):
    _, files = timm_repo("test_vit_tiny", "x")
    files["config.json"] = timm_config_json("vit_small_patch16_224", 10, tag="x", img_size=32)
    cache_repo(hub, "timm/test_vit_tiny.x", files)
    with pytest.raises(CheckpointError, match="says architecture 'vit_small_patch16_224', not 'test_vit_tiny'"):
        read_checkpoint("timm:test_vit_tiny.x")


def test_weights_that_do_not_fit_their_config_json_are_refused(hub):
    _, files = timm_repo("test_vit_tiny", "x")
    files["config.json"] = timm_config_json("test_vit_tiny", 7, tag="x", img_size=32)  # the head has 10
    cache_repo(hub, "timm/test_vit_tiny.x", files)
    with pytest.raises(WeightsMismatchError, match="head"):
        read_checkpoint("timm:test_vit_tiny.x")


def test_non_finite_pretrained_weights_are_refused(hub):
    cfg = get_config("test_vit_tiny")
    sd = TIMM.export(random_canonical(cfg), cfg)
    sd["blocks.1.mlp.fc1.bias"][3] = np.nan
    cache_repo(hub, "timm/test_vit_tiny.nan", {"model.safetensors": safetensors_bytes(sd)})
    with pytest.raises(WeightsMismatchError, match="NaN"):
        read_checkpoint("timm:test_vit_tiny.nan")


def test_a_new_class_count_replaces_the_head_and_its_class_names(hub):
    w, files = timm_repo("test_vit_tiny", "test_in1k", label_names=[f"c{i}" for i in range(10)])
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", files)
    assert read_checkpoint("timm:test_vit_tiny").meta["class_names"][0] == "c0"
    ckpt = read_checkpoint("timm:test_vit_tiny", num_classes=4)
    assert ckpt.config.num_classes == 4 and "class_names" not in ckpt.meta
    assert not ckpt.weights["head/kernel"].any() and ckpt.weights["head/kernel"].shape == (48, 4)
    assert_same({k: v for k, v in ckpt.weights.items() if not k.startswith("head")},
                {k: v for k, v in w.items() if not k.startswith("head")})
    assert any("head replaced: 10 -> 4" in change for change in ckpt.meta["adapted"])


def test_offline_and_not_cached_names_the_repository_and_file(hub):
    with pytest.raises(CheckpointError) as e:
        read_checkpoint("timm:test_vit_tiny")
    message = str(e.value)
    assert "timm/test_vit_tiny.test_in1k/model.safetensors: not in the Hugging Face cache" in message
    assert str(hub) in message and "HF_HUB_OFFLINE=1" in message and "pytorch_model.bin" in message
    with pytest.raises(CheckpointError, match="someone/repo/config.json: not in the Hugging Face cache"):
        read_checkpoint("hf-hub:someone/repo")


def test_download_from_a_loopback_hub_then_offline(tmp_path, monkeypatch, tiny_presets):
    w, files = timm_repo("test_vit_tiny", "test_in1k")
    cache = tmp_path / "hub"
    with loopback_hub({"timm/test_vit_tiny.test_in1k": files}) as (endpoint, requests):
        use_hub(monkeypatch, cache, offline=False, endpoint=endpoint)
        assert_same(read_checkpoint("timm:test_vit_tiny").weights, w)
        assert [r.split("/")[-1] for r in requests] == ["config.json", "config.json", "model.safetensors",
                                                        "model.safetensors"]  # HEAD and GET each
        with pytest.raises(CheckpointError, match=r"timm/test_vit_tiny\.nope: no such repository on the Hub; "
                                                  r"is 'nope' a pretrained tag of test_vit_tiny\?"):
            read_checkpoint("timm:test_vit_tiny.nope")
    snapshots = list((cache / "models--timm--test_vit_tiny.test_in1k" / "snapshots").iterdir())
    assert len(snapshots) == 1 and (snapshots[0] / "model.safetensors").is_file()
    use_hub(monkeypatch, cache, offline=True)  # what was downloaded is read without the server
    assert_same(read_checkpoint("timm:test_vit_tiny").weights, w)


def test_a_repository_without_weights_says_which_files_it_lacks(tmp_path, monkeypatch, tiny_presets):
    files = {"config.json": timm_config_json("test_vit_tiny", 10, tag="t", img_size=32)}
    with loopback_hub({"someone/empty": files}) as (endpoint, _):
        use_hub(monkeypatch, tmp_path / "hub", offline=False, endpoint=endpoint)
        with pytest.raises(CheckpointError, match="someone/empty/model.safetensors: the repository has no such "
                                                  "file; nor is pytorch_model.bin there"):
            read_checkpoint("hf-hub:someone/empty")


def _cli(args, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(env_extra, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "vit_common.cli.vit_convert", *args], capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT)


def test_vit_convert_reads_a_pretrained_name_with_the_users_environment(tmp_path):
    """A fresh process configured only by environment variables, as a user runs it: a real
    preset's bare name (its default tag) from a cache under HF_HOME, offline."""
    cfg = get_config("vit_tiny_patch16_224")  # full size: 5.7M parameters
    w = random_canonical(cfg)
    cache_repo(tmp_path / "home" / "hub", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
               {"model.safetensors": safetensors_bytes(TIMM.export(w, cfg))})
    env = {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    done = _cli(["timm:vit_tiny_patch16_224", str(tmp_path / "out.npz")], env)
    assert done.returncode == 0, done.stderr
    assert "read  timm:vit_tiny_patch16_224 (timm state dict)" in done.stdout
    converted = read_checkpoint(tmp_path / "out.npz")
    assert converted.config == cfg
    assert_same(converted.weights, w)
    assert converted.meta["preprocess"]["mean"] == 0.5  # timm's augreg ViT family default (no config.json)
    done = _cli(["timm:vit_tiny_patch16_224.missing", str(tmp_path / "other.npz")], env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "timm/vit_tiny_patch16_224.missing/model.safetensors: not in the Hugging Face cache" in done.stderr


def test_a_missing_path_that_reads_as_a_name_says_how_to_name_weights():
    with pytest.raises(CheckpointError, match="pretrained weights are named timm:vit_base_patch16_224.augreg_in1k"):
        read_checkpoint("vit_base_patch16_224.augreg_in1k")
    with pytest.raises(CheckpointError, match=r"does not exist$"):
        read_checkpoint("vit_base_patch16_224.npz")


def test_train_init_takes_a_pretrained_name(hub, capsys):
    from vit_common.train.recipe import parse_train_args
    from vit_common.train.run import initial_weights

    w, files = timm_repo("test_vit_tiny", "test_in1k")
    cache_repo(hub, "timm/test_vit_tiny.test_in1k", files)
    weights = initial_weights("timm:test_vit_tiny", get_config("test_vit_tiny", num_classes=3))
    assert weights["head/kernel"].shape == (48, 3)
    assert_same({k: v for k, v in weights.items() if not k.startswith("head")},
                {k: v for k, v in w.items() if not k.startswith("head")})
    out = capsys.readouterr().out
    assert "initialised from timm:test_vit_tiny (hf-hub:timm/test_vit_tiny.test_in1k): head replaced" in out
    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    assert "timm:NAME[.TAG]" in capsys.readouterr().out


def test_hf_hub_revision_picks_that_snapshot(hub):
    """`hf-hub:ORG/REPO@REV`: a branch or tag name, or a commit, reads that snapshot; no revision,
    the default branch."""
    main_w, main_files = timm_repo("test_vit_tiny", "test_in1k", seed=0)
    v2_w, v2_files = timm_repo("test_vit_tiny", "test_in1k", seed=1)
    v2_commit = "fedcba9876543210fedcba9876543210fedcba98"
    cache_repo(hub, "someone/tiny", main_files)
    cache_repo(hub, "someone/tiny", v2_files, commit=v2_commit, revision="v2")
    assert_same(read_checkpoint("hf-hub:someone/tiny").weights, main_w)
    for name in ("hf-hub:someone/tiny@v2", f"hf-hub:someone/tiny@{v2_commit}"):
        ckpt = read_checkpoint(name)
        assert_same(ckpt.weights, v2_w)
        assert "@" in ckpt.meta["source"], ckpt.meta["source"]
    with pytest.raises(CheckpointError):
        read_checkpoint("hf-hub:someone/tiny@no-such-branch")
