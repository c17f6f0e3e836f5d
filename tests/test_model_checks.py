"""Model checks that need transformers (fedumm.models.checks): an unknown inline model_type and LoRA
target names that the model does not have are refused before any job, naming the key; passed
checks are remembered so that later DAG builds do not import transformers."""

from __future__ import annotations

import copy

import pytest
from workflow_util import TINY_HF_CONFIGS, TINY_MODEL

from fedumm.config import ConfigError, load_experiments
from fedumm.models import checks


def _experiments(default_config, schema, model: dict, **lora) -> dict:
    default_config["models"] = {"m": model}
    default_config["defaults"]["model"] = "m"
    default_config["defaults"]["lora"].update(lora)
    default_config["experiments"] = {"x": {}}
    return load_experiments(default_config, schema)


def test_known_targets_pass_and_the_pass_is_remembered(default_config, schema, tmp_path):
    experiments = _experiments(default_config, schema, copy.deepcopy(TINY_MODEL))
    cache = tmp_path / "checks"
    checks.check_models({"m": TINY_MODEL}, experiments, cache)
    assert len(list(cache.iterdir())) == 1
    # A cached pass returns before building anything: a model that cannot be built is not looked at.
    broken = copy.deepcopy(TINY_MODEL)
    broken["language"]["config"]["model_type"] = "no_such_model"
    with pytest.raises(ConfigError):
        checks.check_models({"m": broken}, experiments, tmp_path / "other")
    checks.check_models({"m": TINY_MODEL}, experiments, cache)


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ({"target_modules": ["q_proj", "qkv"]}, r"'experiments.x.lora.target_modules': the language model has no module named 'qkv' "
                                                r"\(its linear layers: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj\)"),
        ({"vision_target_modules": ["query"]}, r"'experiments.x.lora.vision_target_modules': the vision model has no module named 'query'"),
        ({"modules_to_save": ["lm_head", "head"]}, r"^config key 'experiments.x.lora.modules_to_save': the model has no module named 'head'$"),
    ],
)
def test_unknown_lora_targets_are_refused_naming_the_key(default_config, schema, tmp_path, lora, message):
    experiments = _experiments(default_config, schema, copy.deepcopy(TINY_MODEL), **lora)
    with pytest.raises(ConfigError, match=message):
        checks.check_models({"m": TINY_MODEL}, experiments, tmp_path / "checks")
    assert not (tmp_path / "checks").exists()


def test_an_unknown_inline_model_type_is_refused_naming_the_key(default_config, schema, tmp_path):
    model = copy.deepcopy(TINY_MODEL)
    model["language"]["config"]["model_type"] = "lama"
    experiments = _experiments(default_config, schema, model)
    with pytest.raises(ConfigError, match=r"config key 'models.m.language.config': .*lama"):
        checks.check_models({"m": model}, experiments, tmp_path / "checks")


def test_hf_inline_configs_check_targets_and_the_schema_their_model_type(default_config, schema, tmp_path):
    spec = {"family": "hf", "config": copy.deepcopy(TINY_HF_CONFIGS["llava"]),
            "pretrain": {"dataset": "shapes", "split": "public", "steps": 0}}
    experiments = _experiments(default_config, schema, spec, target_modules=["q_proj", "v_proj"])
    checks.check_models({"m": spec}, experiments, tmp_path / "ok")
    head = _experiments(default_config, schema, spec, target_modules=["q_proj"], modules_to_save=["lm_head"])
    checks.check_models({"m": spec}, head, tmp_path / "head")  # beside the language model in hf models
    bad = _experiments(default_config, schema, spec, target_modules=["c_attn"])
    with pytest.raises(ConfigError, match=r"'experiments.x.lora.target_modules': the language model has no module named 'c_attn'"):
        checks.check_models({"m": spec}, bad, tmp_path / "bad")
    spec["config"]["model_type"] = "llava_next"
    with pytest.raises(ConfigError, match=r"'models.m.config.model_type': 'llava_next' is not one of \['qwen2_5_vl', 'llava'"):
        _experiments(default_config, schema, spec)
