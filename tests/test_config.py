"""Config validation: every mistake is reported with the key that causes it."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import pytest

from fedumm.config import CLIENT_METRICS, ConfigError, config_hash, deep_merge, load_experiments


def test_default_config_resolves_the_demo_experiments(default_config, schema):
    experiments = load_experiments(default_config, schema)
    assert sorted(experiments) == ["centralized", "fedavg", "local", "unified", "unified_centralized"]
    assert experiments["centralized"]["kind"] == "centralized"
    assert experiments["fedavg"]["partition"] == default_config["defaults"]["partition"]
    # the tiny model's output head trains as a full copy in the demo's three experiments only
    assert {name: e["lora"]["modules_to_save"] for name, e in experiments.items()} == {
        "centralized": ["lm_head"], "fedavg": ["lm_head"], "local": ["lm_head"], "unified": [], "unified_centralized": []}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["defaults"].update(alhpa=1), r"'defaults': unknown key 'alhpa'"),
        (lambda c: c["experiments"]["fedavg"].update(strategy={"name": "fedfoo"}),
         r"'experiments.fedavg.strategy': unknown strategy 'fedfoo'"),
        (lambda c: c["experiments"]["fedavg"].update(strategy={"name": "fedavg", "eta": 1}),
         r"'experiments.fedavg.strategy': unknown parameter\(s\) eta"),
        (lambda c: c["experiments"]["fedavg"].update(partition={"alpha": 0}),
         r"'experiments.fedavg.partition.alpha': 0 is less than or equal to the minimum of 0"),
        (lambda c: c["experiments"]["fedavg"].update(partition={"alpha": -1.5}),
         r"'experiments.fedavg.partition.alpha'"),
        (lambda c: c["experiments"]["fedavg"].update(clients=5000),
         r"'experiments.fedavg.clients': 5000 clients but dataset 'shapes' has only 2000 training samples; "
         r"every client needs one, so use at most 2000 clients or a larger train split"),
        (lambda c: c["experiments"]["fedavg"].update(partition={"min_size": 0}),
         r"'experiments.fedavg.partition.min_size': 0 is less than the minimum of 1"),
        (lambda c: c["experiments"]["fedavg"].update(partition={"scheme": "iid", "min_size": 501}),
         r"'experiments.fedavg.partition.min_size': 4 clients × min_size 501 exceeds the 2000 training samples; "
         r"lower min_size or use fewer clients"),
        (lambda c: c["experiments"]["fedavg"].update(clients_per_round=9),
         r"'experiments.fedavg.clients_per_round': 9 exceeds clients=4"),
        (lambda c: c["experiments"]["fedavg"].update(dataset="vqa"),
         r"'experiments.fedavg.dataset': unknown dataset 'vqa'"),
        (lambda c: c["experiments"]["fedavg"].update(tuning={"mode": "two_stage", "connector_rounds": 4}),
         r"'experiments.fedavg.tuning.connector_rounds'"),
        (lambda c: c["models"]["tiny"].update(connector="mlp2x_relu"), r"'models.tiny.connector'"),
        (lambda c: c["defaults"].pop("rounds"), r"experiment 'fedavg' .*'<top level>': 'rounds' is a required"),
        # The README's own example, {name: krum, f: 1}, with the default 4 clients.
        (lambda c: c["defaults"].update(strategy={"name": "fedavg", "robust": {"name": "krum", "f": 1}}),
         r"^config key 'experiments.fedavg.strategy.robust.f': krum with f=1 needs more than 2f \+ 2 = 4 clients "
         r"aggregated per round, and clients_per_round gives 4 of the 4 clients; use f <= 0, or at least 5 clients "
         r"per round, or another robust rule$"),
        (lambda c: c["experiments"]["fedavg"].update(
            clients=10, clients_per_round=0.5, strategy={"name": "fedadam", "robust": {"name": "multi_krum", "f": 0}}),
         None),
        (lambda c: c["experiments"]["fedavg"].update(
            clients=10, clients_per_round=0.4, strategy={"name": "fedadam", "robust": {"name": "multi_krum", "f": 1}}),
         r"'experiments.fedavg.strategy.robust.f': multi_krum with f=1 needs more than 2f \+ 2 = 4 .* "
         r"clients_per_round gives 4 of the 10 clients"),
        (lambda c: c["experiments"]["fedavg"].update(
            clients=10, clients_per_round=0.5, strategy={"name": "fedadam", "robust": {"name": "multi_krum", "f": 1}}),
         None),
        (lambda c: c["experiments"]["fedavg"].update(
            clients=10, strategy={"name": "fedavgm", "robust": {"name": "multi_krum", "f": 1, "m": 11}}),
         r"^config key 'experiments.fedavg.strategy.robust.m': multi_krum selects m=11 clients, but "
         r"clients_per_round gives 10 of the 10 clients; use m <= 10$"),
        (lambda c: c["experiments"]["centralized"].update(strategy={"name": "fedavg", "robust": {"name": "krum", "f": 0}}),
         r"'experiments.centralized.strategy.robust.f': .* the centralized kind aggregates its 1 client per round; "
         r"give experiments.centralized a strategy without krum"),
        # Krum in local experiments is never run (no aggregation).
        (lambda c: c["experiments"]["local"].update(strategy={"name": "fedavg", "robust": {"name": "krum", "f": 3}}), None),
        (lambda c: c["experiments"]["fedavg"].update(clients=60, partition={"min_size": 1, "one_pass": 34}),
         r"^config key 'experiments.fedavg.partition.one_pass': 34 parts per client, but some client holds at most 33 "
         r"training samples \(2000 over 60 clients\); use one_pass <= 33, or fewer clients$"),
        (lambda c: c["experiments"]["fedavg"].update(clients=60, partition={"min_size": 1, "one_pass": 33}), None),
        (lambda c: c["experiments"]["fedavg"].update(strategy={"name": "fedumm_fusion", "metric": "val_accuracy"}),
         r"^config key 'experiments.fedavg.strategy.metric': clients write no numeric metric 'val_accuracy' to "
         r"metrics.json; use one of num_samples, .*val_score.* \(e.g. val_score\)$"),
        (lambda c: c["experiments"]["fedavg"].update(strategy={"name": "fedumm_fusion", "metric": "trained_groups"}),
         r"'experiments.fedavg.strategy.metric': clients write no numeric metric 'trained_groups'"),
        (lambda c: c["experiments"]["fedavg"].update(strategy={"name": "fedumm_fusion", "metric": "val_score"}), None),
        (lambda c: c["experiments"]["fedavg"].update(baseline="pooled"),
         r"^config key 'experiments.fedavg.baseline': no experiment 'pooled' \(centralized experiments: centralized, unified_centralized\)$"),
        (lambda c: c["experiments"]["fedavg"].update(baseline="local"),
         r"^config key 'experiments.fedavg.baseline': 'local' is a local experiment; Table 1 compares with a centralized one"),
        (lambda c: c["experiments"]["fedavg"].update(baseline="unified_centralized"),
         r"^config key 'experiments.fedavg.baseline': 'unified_centralized' trains on dataset 'shapes_unified', "
         r"'fedavg' on 'shapes'; their scores are not comparable$"),
        (lambda c: c["experiments"]["fedavg"].update(baseline="centralized"), None),
        (lambda c: c["experiments"]["fedavg"].update(init={"experiment": "fedprox"}),
         r"^config key 'experiments.fedavg.init.experiment': no other experiment 'fedprox' \(defined: centralized, local, "),
        (lambda c: c["experiments"]["fedavg"].update(init={"experiment": "local"}),
         r"^config key 'experiments.fedavg.init.experiment': 'local' is local; it has no global adapter to start from$"),
        (lambda c: c["experiments"].update(warm={"init": {"experiment": "fedavg", "round": 4}}),
         r"^config key 'experiments.warm.init.round': 'fedavg' runs 3 rounds, not 4$"),
        (lambda c: c["experiments"].update(warm={"init": {"experiment": "fedavg"}, "lora": {"r": 4}}),
         r"^config key 'experiments.warm.init.experiment': 'fedavg' has another lora .*; its adapter does not fit this experiment$"),
        (lambda c: c["experiments"].update(warm={"init": {"experiment": "fedavg", "from": "x"}}),
         r"^config key 'experiments.warm.init': give either from \(an adapter directory\) or experiment"),
        (lambda c: c["experiments"].update(warm={"init": {"from": "no/such/dir"}}),
         r"^config key 'experiments.warm.init.from': no/such/dir is not an adapter directory \(no adapter_config.json, "),
        (lambda c: c["experiments"].update(warm={"init": {"experiment": "fedavg"}, "lora": {"modules_to_save": ["lm_head"]}}),
         None),
        (lambda c: c["experiments"]["fedavg"].update(eval={"split": "val"}),
         r"^config key 'experiments.fedavg.eval.select_split': choosing the round on the split it reports \(val\) would "
         r"overstate the score; use another split or null$"),
        (lambda c: c["experiments"]["fedavg"].update(eval={"split": "val", "select_split": None}), None),
        (lambda c: c["experiments"]["fedavg"].update(tuning={"mode": "full"}), None),
        (lambda c: c["experiments"]["fedavg"].update(lora={"modules_to_save": ["lm_head", "v_proj"]}),
         r"^config key 'experiments.fedavg.lora.modules_to_save': \['v_proj'\] also get LoRA \(lora.target_modules\); "
         r"a module is either trained in full or through LoRA$"),
        (lambda c: c["experiments"]["fedavg"].update(tuning={"mode": "full"}, strategy={"name": "lora_fedavg", "mode": "stack"}),
         r"^config key 'experiments.fedavg.tuning.mode': full fine-tuning cannot run with strategy 'lora_fedavg': its "
         r"aggregation \(stacking, SVD, a frozen A\) needs LoRA factors"),
        (lambda c: c["experiments"]["unified"].update(tuning={"mode": "full"}),
         r"^config key 'experiments.unified.tuning.mode': full fine-tuning runs on the llava_recipe family \(its "
         r"connector and language model\); model 'tiny_janus' trains adapters$"),
    ],
)
def test_config_errors_name_the_key(default_config, schema, mutate, message):
    """Each mistake is refused with one message naming its key; ``None``: a neighbouring config that is fine."""
    mutate(default_config)
    if message is None:
        assert load_experiments(default_config, schema)
        return
    with pytest.raises(ConfigError, match=message):
        load_experiments(default_config, schema)


def test_folder_dataset_must_exist(default_config, schema, tmp_path):
    folder = tmp_path / "private"
    default_config["datasets"]["private"] = {"kind": "folder", "path": str(folder), "splits": {"train": 100, "val": 0, "test": 10}}
    with_folder = copy.deepcopy(default_config)
    # Defined but unused: not read, so not checked.
    assert load_experiments(default_config, schema)
    default_config["experiments"]["fedavg"]["dataset"] = "private"
    with pytest.raises(ConfigError, match=rf"^config key 'datasets.private.path': folder '{re.escape(str(folder))}' "
                       r"does not exist \(looked in .*\); set path to a folder in the normalized format"):
        load_experiments(default_config, schema)
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"^config key 'datasets.private.path': folder .* has no card.json"):
        load_experiments(default_config, schema)
    (folder / "card.json").write_text("{}")
    assert load_experiments(default_config, schema)["fedavg"]["dataset"] == "private"
    # A folder that only a mixture reads is checked too.
    with_folder["datasets"]["mix"] = {"kind": "mixture", "parts": ["shapes", "private"], "splits": {"train": 100, "val": 0, "test": 10}}
    with_folder["datasets"]["private"]["path"] = str(tmp_path / "gone")
    with_folder["experiments"] = {"m": {"dataset": "mix", "partition": {"min_size": 1}}}
    with pytest.raises(ConfigError, match=r"'datasets.private.path': folder .*gone' does not exist"):
        load_experiments(with_folder, schema)


def test_a_dataset_without_a_val_split_reports_the_last_round(default_config, schema):
    default_config["datasets"]["shapes"]["splits"]["val"] = 0
    experiments = load_experiments(default_config, schema)
    assert experiments["fedavg"]["eval"]["select_split"] is None
    assert experiments["unified"]["eval"]["select_split"] == "val"  # shapes_unified keeps its val split


def test_client_metrics_are_the_numeric_keys_clients_write():
    """fedumm_fusion's metric is checked against CLIENT_METRICS: it must list what train_client writes."""
    source = (Path(__file__).resolve().parents[1] / "fedumm" / "federated" / "client.py").read_text()
    written = next(
        [key.value for key in node.value.keys if isinstance(key, ast.Constant)]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["metrics"]
        and isinstance(node.value, ast.Dict)
    )
    assert sorted(CLIENT_METRICS) == sorted(set(written) - {"trained_groups", "bytes_uploaded_by_group", "num_samples_by_modality"})


def test_sweep_expands_the_product(default_config, schema):
    default_config["experiments"] = {}
    default_config["sweep"] = {"clients": [2, 4], "alpha": [0.1, 1.0], "strategy": ["fedavg"], "seed": [0, 1]}
    experiments = load_experiments(default_config, schema)
    assert len(experiments) == 8
    chosen = experiments["sweep_c2_a0.1_fedavg_s1"]
    assert (chosen["clients"], chosen["partition"]["alpha"], chosen["seed"]) == (2, 0.1, 1)


def test_deep_merge_replaces_strategy_whole():
    merged = deep_merge({"train": {"lr": 1, "wd": 2}, "strategy": {"name": "a", "x": 1}},
                       {"train": {"lr": 3}, "strategy": {"name": "b"}})
    assert merged == {"train": {"lr": 3, "wd": 2}, "strategy": {"name": "b"}}


def test_config_hash_is_stable_and_sensitive():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_dp_sampling_rate_follows_the_client_sampling(default_config, schema):
    default_config["experiments"] = {
        "dp": {"clients": 8, "clients_per_round": 2,
               "strategy": {"name": "dp_fedavg", "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}}
    }
    assert load_experiments(default_config, schema)["dp"]["strategy"]["sampling_rate"] == 0.25


# ----------------------------------------------------------------------------- YAML files and --config


def test_yaml_duplicate_keys_and_syntax_errors_name_the_file_and_line(tmp_path):
    from fedumm.config import check_yaml_files, load_yaml

    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text("defaults:\n  rounds: 4\n  clients: 4\n  rounds: 6\n")
    with pytest.raises(ConfigError, match=rf"^config file {re.escape(str(duplicate))}, line 4, column 3: duplicate key "
                       r"'rounds' \(first given at line 2\); keep one of them$"):
        check_yaml_files([duplicate])
    broken = tmp_path / "broken.yaml"
    broken.write_text("defaults:\n  rounds: [1, 2\n  clients: 3\n")
    with pytest.raises(ConfigError, match=rf"^config file {re.escape(str(broken))}, line 3, column 10: YAML syntax error: "
                       r"expected ',' or '\]', but got ':' \(while parsing a flow sequence at line 2\)$"):
        load_yaml(broken)
    # Merge keys are not duplicates, even when an explicit key overrides a merged one; equal keys in
    # different mappings are fine; a missing file is skipped (Snakemake decides whether it must exist).
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nother: {x: 1}\n")
    assert load_yaml(merged) == {"base": {"x": 1, "y": 2}, "use": {"x": 1, "y": 3}, "other": {"x": 1}}
    json_file = tmp_path / "c.json"
    json_file.write_text('{"defaults":\n\t{"rounds": 3, "rounds": 4}}')  # JSON, with a tab YAML would refuse
    with pytest.raises(ConfigError, match=r"c.json: duplicate key 'rounds' in one object"):
        check_yaml_files([tmp_path / "absent.yaml", json_file])


def _cli_overrides(*entries: str) -> dict:
    """``snakemake --config`` entries as Snakemake parses them (nested scalars stay strings)."""
    from snakemake.cli import parse_config

    return parse_config(list(entries))


def _with_overrides(config: dict, overrides: dict) -> dict:
    from snakemake.utils import update_config

    update_config(config, overrides)
    return config


def test_nested_config_overrides_get_their_yaml_types(default_config, schema):
    overrides = _cli_overrides(
        "defaults={rounds: 5, clients_per_round: 0.5, train: {local_steps: null}, eval: {initial: false}}",
        "experiments={fedavg: {strategy: {name: fedadam, eta: 0.01}}, odd: {dataset: 2020, seed: 3}}",
        "resources={client_train: {cpus: 2}}",
        "sweep=null",
    )
    assert overrides["defaults"]["rounds"] == "5" and overrides["sweep"] == "null"  # what Snakemake hands over
    config = _with_overrides(default_config, overrides)
    config["datasets"]["2020"] = copy.deepcopy(config["datasets"]["shapes"])  # a dataset named like a number
    experiments = load_experiments(config, schema, overrides=overrides)
    fedavg = experiments["fedavg"]
    assert (fedavg["rounds"], fedavg["clients_per_round"], fedavg["train"]["local_steps"], fedavg["eval"]["initial"]) == (5, 0.5, None, False)
    assert fedavg["strategy"]["eta"] == 0.01  # not in the schema: read as YAML all the same
    assert experiments["odd"]["dataset"] == "2020" and experiments["odd"]["seed"] == 3
    assert config["resources"]["client_train"]["cpus"] == 2 and config["sweep"] is None  # the rules read config


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("defaults={rounds: five}", r"^config key 'defaults.rounds': 'five' is not of type 'integer'$"),
        ("defaults={rounds: -5}", r"^config key 'defaults.rounds': -5 is less than the minimum of 1$"),
    ],
)
def test_nested_config_overrides_that_are_wrong_name_the_key(default_config, schema, entry, message):
    overrides = _cli_overrides(entry)
    with pytest.raises(ConfigError, match=message):
        load_experiments(_with_overrides(default_config, overrides), schema, overrides=overrides)


def _unified(default_config: dict) -> dict:
    """The default config with a tiny Janus that generates and a dataset with text-to-image records."""
    default_config["datasets"]["shapes"]["generate_fraction"] = 0.3
    default_config["models"]["janus"] = {
        "family": "hf", "config": {"model_type": "janus"}, "seed": 0,
        "pretrain": {"dataset": "shapes", "steps": 0, "tasks": ["vqa", "generate"]},
        "generation": {"image_tokenizer": "grid"},
    }
    default_config["defaults"].update(model="janus")
    default_config["defaults"]["partition"]["label"] = "task"
    return default_config


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["defaults"]["partition"].update(label="answer"),
     r"'experiments.fedavg.partition.label': 'answer' is a field of question records"),
    (lambda c: c["experiments"].update(fedavg={"strategy": {"name": "scaffold"}}),
     r"'experiments.fedavg.strategy': model 'janus' generates images.*scaffold.*control variates"),
    (lambda c: c["models"]["janus"]["config"].update(model_type="llava"),
     r"'models.janus.generation': llava does not generate images \(models that do: janus\)"),
    (lambda c: c["models"]["janus"].pop("generation"),
     r"'models.janus.pretrain.tasks': `generate` trains the generation path"),
])
def test_a_unified_config_is_checked_before_any_job(default_config, schema, change, message):
    config = _unified(default_config)
    load_experiments(copy.deepcopy(config), schema)  # the unified config itself is valid
    change(config)
    with pytest.raises(ConfigError, match=message):
        load_experiments(config, schema)
