"""vit-predict: both twins' predict() agree, and the CLI runs end to end in either framework."""
import re
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import torch

import vit_jax.predict
import vit_torch
import vit_torch.predict
from parity_tests import reference
from parity_tests.grid import small
from parity_tests.harness import FLOAT32_TOL, build_pair, perturb, random_images, rel_error
from vit_common import TIMM, canonical_shapes, get_config, save_npz, save_safetensors
from vit_common.predict.attention_maps import attention_rollout, last_layer_cls_attention
from vit_common.cli.vit_predict import main

CLASS_NAMES = [f"thing {i}" for i in range(10)]


def small_pair(name: str):
    """(torch model, jax model, canonical weights) of a tiny config, initialised in torch."""
    preset, overrides = small(name)
    return build_pair(preset, "torch", **overrides)


@pytest.mark.parametrize("name", ["token", "deit-distilled"])  # class token; two prefix tokens
def test_probabilities_and_maps_agree(name):
    tm, jm, _ = small_pair(name)
    cfg = tm.cfg
    images = random_images(cfg, 2)
    probs_t, att_t = vit_torch.predict.predict(tm, images, attention=True)
    probs_j, att_j = vit_jax.predict.predict(jm, images, attention=True)
    assert probs_t.dtype == probs_j.dtype == np.float32 and probs_t.shape == (2, cfg.num_classes)
    np.testing.assert_allclose(probs_t.sum(-1), 1, rtol=1e-6)
    assert len(att_t) == len(att_j) == cfg.depth
    maps = lambda att: (attention_rollout(att, cfg.num_prefix_tokens, cfg.grid_size),
                        last_layer_cls_attention(att, cfg.num_prefix_tokens, cfg.grid_size))
    (roll_t, heads_t), (roll_j, heads_j) = maps(att_t), maps(att_j)
    assert heads_t.shape == (2, cfg.num_heads, cfg.grid_size, cfg.grid_size)
    errors = {"probs": rel_error(probs_j, probs_t), "rollout": rel_error(roll_j, roll_t),
              "per-head": rel_error(heads_j, heads_t)}
    assert max(errors.values()) <= FLOAT32_TOL, errors


@pytest.mark.parametrize("name", ["map", "map+cls"])  # a MAP probe without and with a class token
def test_feature_models_give_features_and_probe_maps(name):
    """run() of a feature model: the pooled features (against the float64 reference, read through
    an identity head) and the MAP probe's attention, whose maps both twins draw alike."""
    preset, overrides = small(name)
    tm, jm, weights = build_pair(preset, "torch", **{**overrides, "num_classes": 0})
    cfg = tm.cfg
    images = random_images(cfg, 2)
    c = cfg.embed_dim  # the reference's logits through head = I are its pooled features
    identity = dict(weights, **{"head/kernel": np.eye(c), "head/bias": np.zeros(c)})
    want, _, _, probe = reference.forward_with_pool(identity, cfg.replace(num_classes=c), images)
    outs = [twin.run(model, images, attention=True) for twin, model in ((vit_torch.predict, tm), (vit_jax.predict, jm))]
    maps = []
    for out in outs:
        assert out.probs is None and out.features.shape == (2, c)
        assert rel_error(out.features, want) <= FLOAT32_TOL and rel_error(out.pool_attention, probe) <= FLOAT32_TOL
        maps.append((attention_rollout(out.attentions, cfg.num_prefix_tokens, cfg.grid_size, out.pool_attention),
                     last_layer_cls_attention(out.attentions, cfg.num_prefix_tokens, cfg.grid_size,
                                              out.pool_attention)))
    (roll_t, heads_t), (roll_j, heads_j) = maps
    assert heads_t.shape == (2, cfg.num_heads, cfg.grid_size, cfg.grid_size)
    np.testing.assert_allclose(heads_t, probe[:, :, 0, cfg.num_prefix_tokens:].reshape(heads_t.shape), atol=1e-6)
    assert rel_error(roll_j, roll_t) <= FLOAT32_TOL and rel_error(heads_j, heads_t) <= FLOAT32_TOL


def test_without_attention_and_without_head():
    tm, jm, _ = small_pair("token")
    images = random_images(tm.cfg, 1)
    headless = SimpleNamespace(cfg=tm.cfg.replace(num_classes=0))  # the guard reads only the config
    for twin, model in ((vit_torch.predict, tm), (vit_jax.predict, jm)):
        probs, att = twin.predict(model, images, attention=False)
        assert probs.shape == (1, 10) and att == []
        with pytest.raises(ValueError, match="num_classes=0"):
            twin.predict(headless, images, attention=False)


# The CLI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny trained-looking ViT saved with its config and class names, as vit-convert writes."""
    preset, overrides = small("token")
    torch.manual_seed(0)  # torch only: jax work here would run outside the pinned-precision fixture
    tm = vit_torch.create_model(preset, **overrides)
    weights = perturb(vit_torch.to_canonical(tm), seed=0)
    weights["head/kernel"] = weights["head/kernel"] * 50  # spread the probabilities apart
    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    save_npz(path, weights, tm.cfg, meta={"class_names": CLASS_NAMES})
    return path


@pytest.fixture
def two_images(tmp_path):
    """A bright disc on dark, and a stripe pattern: different sizes, both need the resize + crop."""
    y, x = np.mgrid[:60, :80]
    disc = np.where(((x - 40) ** 2 + (y - 30) ** 2 < 300)[..., None], [250, 220, 90], [20, 30, 60])
    stripes = np.stack([(np.arange(50)[None, :] // 5 % 2 * 255).repeat(70, 0)] * 3, -1)
    paths = [tmp_path / "disc.png", tmp_path / "stripes.png"]
    for path, pixels in zip(paths, (disc, stripes)):
        Image.fromarray(pixels.astype(np.uint8)).save(path)
    return paths


def parse_predictions(text: str) -> dict[str, list[tuple[str, float]]]:
    out, current = {}, None
    for line in text.splitlines():
        if m := re.fullmatch(r"  (\d\.\d{4})  (.+)", line):
            out[current].append((m.group(2), float(m.group(1))))
        elif line.endswith(":") and not line.startswith(" "):
            current = line[:-1]
            out[current] = []
    return out


def test_cli_end_to_end_in_both_frameworks(tiny_checkpoint, two_images, tmp_path, capsys):
    printed = {}
    for framework in ("torch", "jax"):
        out = tmp_path / framework / "maps"
        argv = ["--checkpoint", str(tiny_checkpoint), "--framework", framework, "--top-k", "3",
                "--attention-map", str(out), *map(str, two_images)]
        assert main(argv) == 0
        text = capsys.readouterr().out
        printed[framework] = parse_predictions(text)
        for image in two_images:  # DIR/<stem>.png per image, readable PNGs
            png = out / f"{image.stem}.png"
            assert f"attention map: {png}" in text
            with Image.open(png) as im:
                assert im.format == "PNG" and im.size[0] > 400
    torch_rows, jax_rows = printed["torch"], printed["jax"]
    assert list(torch_rows) == [str(p) for p in two_images]
    for image, rows in torch_rows.items():
        assert len(rows) == 3 and all(name in CLASS_NAMES for name, _ in rows)
        assert [p for _, p in rows] == sorted((p for _, p in rows), reverse=True)
        assert [n for n, _ in rows] == [n for n, _ in jax_rows[image]]  # the same classes, same order
        np.testing.assert_allclose([p for _, p in rows], [p for _, p in jax_rows[image]], atol=1.01e-4)


def test_cli_single_image_writes_its_map_into_the_folder(tiny_checkpoint, two_images, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["--checkpoint", str(tiny_checkpoint), "--framework", "torch", "--top-k", "20",
                 "--attention-map", str(out), str(two_images[0])]) == 0
    assert (out / f"{two_images[0].stem}.png").is_file()
    assert len(parse_predictions(capsys.readouterr().out)[str(two_images[0])]) == 10  # top-k capped at K


def test_cli_errors(tiny_checkpoint, two_images, tmp_path, capsys):
    def fails(argv, message):
        assert main(argv) == 2
        assert message in capsys.readouterr().err

    fails(["--checkpoint", str(tiny_checkpoint), str(two_images[0]), str(tmp_path / "nope.jpg")],
          f"image not found: {tmp_path / 'nope.jpg'}")
    fails(["--checkpoint", str(tmp_path / "none.npz"), str(two_images[0])], "none.npz does not exist")
    # timm names and no config: the head count of a 48-wide model cannot be read off the shapes.
    preset, overrides = small("token")
    cfg = get_config(preset, **overrides)
    weights = {k: np.zeros(s, np.float32) for k, s in canonical_shapes(cfg).items()}
    save_safetensors(tmp_path / "bare.safetensors", TIMM.export(weights, cfg))
    fails(["--checkpoint", str(tmp_path / "bare.safetensors"), str(two_images[0])], "pass --model NAME")
    with pytest.raises(SystemExit):  # argparse: exit 2, naming the option
        main(["--checkpoint", str(tiny_checkpoint), "--save-features", str(tmp_path / "f.txt"), str(two_images[0])])
    assert "--save-features writes a .npy file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["map", "avg+fc_norm"])
def test_cli_prints_and_saves_the_embeddings_of_a_feature_model(name, two_images, tmp_path, capsys):
    preset, overrides = small(name)
    torch.manual_seed(0)
    tm = vit_torch.create_model(preset, **{**overrides, "num_classes": 0})
    save_npz(tmp_path / "features.npz", perturb(vit_torch.to_canonical(tm), seed=0), tm.cfg)
    saved = {}
    for framework in ("torch", "jax"):
        saved[framework] = tmp_path / f"{framework}.npy"
        assert main(["--checkpoint", str(tmp_path / "features.npz"), "--framework", framework,
                     "--save-features", str(saved[framework]), "--attention-map", str(tmp_path / f"{framework}-maps"),
                     *map(str, two_images)]) == 0
        text = capsys.readouterr().out
        assert "no classification head (num_classes=0): printing each image's embedding" in text
        assert f"features: 2 x 48 float32 saved to {saved[framework]}" in text
        # GAP has neither a class token nor a probe: the CLI says what its maps show instead.
        assert ("pools by averaging its patch tokens" in text) == (name != "map")
        features = np.load(saved[framework])
        norms = [float(m) for m in re.findall(r"features \(48,\): L2 norm (\d+\.\d+)", text)]
        np.testing.assert_allclose(norms, np.linalg.norm(features, axis=1), atol=1e-4)
        for image in two_images:
            assert (tmp_path / f"{framework}-maps" / f"{image.stem}.png").is_file()
    assert rel_error(np.load(saved["jax"]), np.load(saved["torch"])) <= FLOAT32_TOL


def test_cli_says_which_preprocessing_it_applied_and_why(tiny_checkpoint, two_images, tmp_path, capsys):
    from vit_common.cli.vit_convert import main as vit_convert
    from vit_common.formats import read_checkpoint
    from vit_common.predict.defaults import FAMILIES

    google = "RGB; whole image resized to 32x32 (bilinear, aspect not kept); pixels in [-1, 1] (mean = std = 0.5)"
    # A canonical .npz that records none gets Google's evaluation preprocessing.
    assert main(["--checkpoint", str(tiny_checkpoint), "--framework", "torch", str(two_images[0])]) == 0
    reference = capsys.readouterr().out.splitlines()
    assert reference[0] == f"preprocessing (family default: Google vision_transformer / big_vision): {google}"
    # vit-convert writes it into every output, which then says it records it (and predicts the same).
    for name in ("tiny.safetensors", "tiny.pt", "tiny_run"):
        dst = tmp_path / name
        assert vit_convert([str(tiny_checkpoint), str(dst)]) == 0
        capsys.readouterr()
        assert read_checkpoint(dst).meta["preprocess"] == FAMILIES["google"][1]
        assert main(["--checkpoint", str(dst), "--framework", "torch", str(two_images[0])]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"preprocessing (recorded in the checkpoint): {google}"
        assert lines[1:] == reference[1:]


def test_cli_rejects_a_record_it_cannot_apply(tiny_checkpoint, two_images, tmp_path, capsys):
    from vit_common.formats import read_checkpoint

    ckpt = read_checkpoint(tiny_checkpoint)
    for bad, message in (({"crop_pct": 1.5}, "crop_pct must be in (0, 1]"),
                         ({"color_mode": "L"}, "converts images to 'L'"),
                         ({"resize": "squash", "crop_pct": 0.9}, "crop_pct must be 1")):
        path = tmp_path / "bad.npz"
        save_npz(path, ckpt.weights, ckpt.config, meta={"preprocess": bad})
        assert main(["--checkpoint", str(path), str(two_images[0])]) == 2
        err = capsys.readouterr().err
        assert "its preprocessing (recorded in the checkpoint) cannot be applied" in err and message in err


def test_cli_saves_patch_features_on_the_grid(tiny_checkpoint, two_images, tmp_path, capsys):
    """--features patch: (N, H', W', C) last-block tokens after the final norm, the same from both twins."""
    from vit_common.formats import read_checkpoint

    saved = {}
    for framework in ("torch", "jax"):
        saved[framework] = tmp_path / f"{framework}-patches.npy"
        assert main(["--checkpoint", str(tiny_checkpoint), "--framework", framework, "--features", "patch",
                     "--save-features", str(saved[framework]), *map(str, two_images)]) == 0
        assert "patch features (N, H', W', C)" in capsys.readouterr().out
    cfg = read_checkpoint(tiny_checkpoint).config
    patches = np.load(saved["torch"])
    assert patches.shape == (2, cfg.grid_size, cfg.grid_size, cfg.embed_dim)
    assert rel_error(np.load(saved["jax"]), patches) <= FLOAT32_TOL
    with pytest.raises(SystemExit):  # --features without --save-features: argparse names the fix
        main(["--checkpoint", str(tiny_checkpoint), "--features", "patch", str(two_images[0])])
    assert "give --save-features OUT.npy too" in capsys.readouterr().err
