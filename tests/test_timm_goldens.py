"""Our names and numbers against timm's own output, recorded once in tests/golden/ (timm cannot
import here: it needs torchvision). The same checks as the timm tests that skip without it
(test_torch_model.py, test_swin_torch.py: test_state_dict_loads_strictly_into_timm;
parity_tests/test_convert.py: test_same_state_dict_as_timms_own_npz_loader;
parity_tests/test_swin_parity.py: test_same_state_dict_as_timms_checkpoint_filter), read from the
files; tests/golden/make_timm_goldens.py says how they were made and how to make them again."""
import json

import numpy as np
import pytest
import torch

import vit_torch
from tests.checkpoint_factories import as_big_vision, as_microsoft_swin, as_opt_target, random_canonical
from tests.golden.make_timm_goldens import (GOOGLE_CASES, GOOGLE_VIT, HERE, MODEL_CASES, SWIN_FILTER, fill,
                                            image_batch)
from vit_common import TIMM, get_config, read_checkpoint

MODELS = json.loads((HERE / "timm_models.json").read_text())["cases"]


def _part(path, case):
    with np.load(path) as f:
        return {k.split("|", 1)[1]: f[k] for k in f.files if k.startswith(case + "|")}


def test_the_goldens_hold_every_case():
    assert MODELS.keys() == MODEL_CASES.keys()
    for case, (name, kw) in MODEL_CASES.items():  # recorded for the very configurations listed
        assert (MODELS[case]["model"], MODELS[case]["kwargs"]) == (name, json.loads(json.dumps(kw))), case


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_state_dict_has_timms_names_and_gives_timms_logits(case):
    golden = MODELS[case]
    ours = vit_torch.create_model(golden["model"], **golden["kwargs"]).eval()
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == golden["state_dict"]
    assert sorted(k for k, _ in ours.named_parameters()) == golden["parameters"]
    # timm's parameters were set by fill(name): the same names get the same values here.
    state = ours.state_dict()
    state.update({k: torch.from_numpy(fill(k, state[k].shape)) for k in golden["parameters"]})
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        logits = ours(torch.from_numpy(image_batch(golden["kwargs"]))).numpy()
    np.testing.assert_allclose(logits, np.array(golden["logits"], np.float32), rtol=0, atol=1e-5, equal_nan=False)


BUILDERS = {"pre_linen_opt_target": as_opt_target, "big_vision_unscanned": lambda w: as_big_vision(w, scanned=False),
            "big_vision_scanned": as_big_vision}


@pytest.mark.parametrize("case", list(GOOGLE_CASES))
def test_same_state_dict_as_timms_own_npz_loader(tmp_path, case):
    cfg = get_config("vit_base_patch16_224", **GOOGLE_VIT, **GOOGLE_CASES[case])
    source = _part(HERE / "timm_inputs.npz", case)
    want = BUILDERS[case](random_canonical(cfg, seed=1))  # the file timm read is what our writer makes
    assert source.keys() == want.keys() and all(np.array_equal(source[k], want[k]) for k in want)
    np.savez(src := tmp_path / "google.npz", **source)
    ours = TIMM.export(read_checkpoint(src).weights, cfg)
    theirs = _part(HERE / "timm_outputs.npz", case)
    assert theirs.keys() == ours.keys()
    for k, v in theirs.items():
        np.testing.assert_array_equal(v, ours[k], err_msg=k)


def test_same_state_dict_as_timms_swin_checkpoint_filter():
    cfg = get_config("swin_tiny_patch4_window7_224", **SWIN_FILTER)
    weights = random_canonical(cfg, seed=2)
    source = _part(HERE / "timm_inputs.npz", "swin_ms")
    ms = {k: np.asarray(v) for k, v in as_microsoft_swin(weights, cfg).items()}
    assert source.keys() == ms.keys() and all(np.array_equal(source[k], ms[k]) for k in ms)
    theirs, ours = _part(HERE / "timm_outputs.npz", "swin_ms"), TIMM.export(weights, cfg)
    assert theirs.keys() == ours.keys()
    for k, v in theirs.items():
        np.testing.assert_array_equal(v, ours[k], err_msg=k)
