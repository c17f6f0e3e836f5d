"""The evaluation of a round (fedumm.evaluation.evaluate.evaluate_adapters) on a tiny model and a split that
mixes every task, for the global model and for local models.

The model's answers depend only on the image and the prompt, so the test first generates them,
then writes the split's references so that known answers are right: the VQA and classification
scores are then known by hand, while captions and boxes are checked against the metric functions
of ``fedumm.evaluation.captions`` and ``fedumm.evaluation.grounding`` on the same answers.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from workflow_util import TINY_MODEL

from fedumm.artifacts import ADAPTER_WEIGHTS, read_weights, write_weights
from fedumm.data import shapes, shards
from fedumm.evaluation import captions, evaluate, grounding, scores
from fedumm.federated.initial import initial_adapter
from fedumm.io import atomic_write_json
from fedumm.models import families, pretrain
from fedumm.models.adapters import load_adapter

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="caption metrics need Java (make system-deps)")

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "vision_target_modules": []}
EVAL = {"split": "test", "batch_size": 5, "max_new_tokens": 3, "caption_max_new_tokens": 6, "ground_max_new_tokens": 9}
NEVER = "qqq"  # not in the tokenizer's vocabulary, so never generated
CPU = torch.device("cpu")


def mixed_samples(n: int) -> list[tuple[dict, object]]:
    """Shapes samples turned into every task: captions, grounding, VQA and classification."""
    samples = []
    for i in range(n):
        record, image = shapes.make_sample("test", i, seed=0, image_size=64, classify_fraction=0.5)
        if i % 4 == 0:
            record.update(task="caption", captions=[record["caption"], "a shape"])
        elif i % 4 == 1:
            record.update(task="ground", question=f"where is the {record['box_shape']} ?",
                          multiple_choice_answer=grounding.format_box(record["box"]))
        samples.append((record, image))
    return samples


def generate(root: Path, adapter: Path, records: list[dict], shards: list[Path]) -> dict[str, str]:
    base = families.load_base(root / "base")
    model = load_adapter(base.model, adapter, is_trainable=False)
    model_inputs = base.family.inputs(base, shards, {r["id"] for r in records})
    lengths = evaluate.generation_lengths(EVAL)
    return evaluate.predict_answers(model, model_inputs, records, EVAL["batch_size"], lengths, CPU)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inference")
    dataset = root / "data"
    shapes.generate_shapes(dataset, {"public": 32, "train": 24}, seed=0, shard_size=32)
    spec = copy.deepcopy(TINY_MODEL)
    spec["pretrain"]["steps"] = 2
    pretrain.build_base_model(spec, shards.split_shards(dataset, "public"), root / "base", threads=1)
    initial_adapter(base_dir=root / "base", lora=LORA, with_connector=True, seed=1,
                    out_dir=root / "global", state_out=root / "state.safetensors")
    # A "local model": the global adapter with random LoRA B (B = 0 would change nothing).
    generator = torch.Generator().manual_seed(3)
    weights = {
        name: torch.randn(t.shape, generator=generator) if "lora_B" in name else t
        for name, t in read_weights(root / "global" / ADAPTER_WEIGHTS).items()
    }
    (root / "local").mkdir()
    write_weights(root / "local" / ADAPTER_WEIGHTS, weights)
    shutil.copy(root / "global" / "adapter_config.json", root / "local" / "adapter_config.json")

    samples = mixed_samples(16)
    shard = root / "test" / "test-00000.tar"
    shards.write_shard(shard, samples)
    records = [record for record, _ in samples]
    answers = {name: generate(root, root / name, records, [shard]) for name in ("global", "local")}

    # References that make known answers of the global model right.
    right_vqa = [r["id"] for r in records if r["task"] == "vqa"][::2]
    right_classify = [r["id"] for r in records if r["task"] == "classify"][:1]
    for record, _ in samples:
        said = answers["global"][record["id"]]
        if record["task"] == "vqa":
            truth = said if record["id"] in right_vqa else NEVER
            record.update(answers=[{"answer": truth, "answer_id": j + 1} for j in range(10)], multiple_choice_answer=truth)
        elif record["task"] == "classify":
            record["label"] = said if record["id"] in right_classify else NEVER
        elif record["task"] == "caption" and record["id"].endswith("0"):
            record["captions"].append(said)
    shards.write_shard(shard, samples)

    ids = [r["id"] for r in records]
    partition = root / "partition"
    for k, part in enumerate((ids[:7], ids[7:])):  # every task in both parts
        atomic_write_json(partition / f"client_{k:03d}.json", {"client": k, "train": [], "val": [], "test": part})
    return {
        "root": root, "records": records, "shards": [shard], "answers": answers, "partition": partition,
        "train_shards": shards.split_shards(dataset, "train"), "right_vqa": right_vqa, "right_classify": right_classify,
    }


def run(world: dict, adapters: dict[str, str], selection: tuple | None = None) -> dict:
    result = evaluate.evaluate_adapters(
        base_dir=world["root"] / "base",
        adapters={name: world["root"] / directory for name, directory in adapters.items()},
        shards=world["shards"],
        feature_file=None,
        train_shards=world["train_shards"],
        partition_dir=world["partition"],
        eval_config={**EVAL, "select_split": "val"} if selection else EVAL,
        device=CPU,
        selection=selection,
    )
    json.dumps(result, allow_nan=False)  # what atomic_write_json will write
    return result


def subset(answers: dict[str, str], records: list[dict]) -> dict[str, str]:
    return {r["id"]: answers[r["id"]] for r in records}


def of_task(records: list[dict], task: str) -> list[dict]:
    return [r for r in records if r["task"] == task]


@needs_java
def test_global_model_on_the_split_and_on_each_clients_part(world: dict) -> None:
    records, answers = world["records"], world["answers"]["global"]
    result = run(world, {"global": "global"})
    assert list(result) == [
        "vqa", "exact_match", "classification_accuracy", "caption", "ground", "n", "n_per_task",
        "score", "score_metric", "personalized", "majority_baseline", "chance", "selection",
    ]
    assert result["selection"] is None  # no selection split given
    assert set(result["chance"]) == {"per_question_type", "classification_accuracy"}
    vqa, classify = of_task(records, "vqa"), of_task(records, "classify")
    assert result["n"] == 16 and result["n_per_task"] == {"caption": 4, "classify": len(classify), "ground": 4, "vqa": len(vqa)}
    assert result["vqa"]["accuracy"] == pytest.approx(len(world["right_vqa"]) / len(vqa))
    assert len(classify) >= 2 and result["classification_accuracy"] == pytest.approx(1 / len(classify))
    assert result["exact_match"] is None
    caption_records = of_task(records, "caption")
    assert result["caption"] == {
        **captions.caption_scores(subset(answers, caption_records), {r["id"]: r["captions"] for r in caption_records}),
        "n": 4,
    }
    assert 0.0 < result["caption"]["BLEU-1"]  # the answers added as references are matched
    ground = of_task(records, "ground")
    sizes = {r["id"]: (64, 64) for r in ground}
    assert result["ground"] == grounding.grounding_scores(subset(answers, ground), {r["id"]: r["box"] for r in ground}, sizes)
    assert result["ground"]["malformed"] == sum(grounding.parse_box(answers[r["id"]], 64, 64) is None for r in ground)
    assert (result["score_metric"], result["score"]) == ("vqa.accuracy", result["vqa"]["accuracy"])
    train = shards.read_records(world["train_shards"])
    assert result["majority_baseline"] == scores.majority_baseline(train, vqa)

    personalized = result["personalized"]
    assert (personalized["split"], personalized["model"]) == ("test", "global")
    assert list(personalized["clients"]) == ["client_0", "client_1"]
    for k, part in enumerate((records[:7], records[7:])):
        expected = scores.score_records(answers, part, sizes, metric="vqa.accuracy")
        assert personalized["clients"][f"client_{k}"] == expected
    client_scores = [personalized["clients"][c]["score"] for c in ("client_0", "client_1")]
    assert personalized["mean"]["score"] == pytest.approx(sum(client_scores) / 2)
    assert personalized["mean"]["score_metric"] == "vqa.accuracy"


@needs_java
def test_local_models_each_on_the_split_and_on_their_own_part(world: dict) -> None:
    records, answers = world["records"], world["answers"]
    assert answers["local"] != answers["global"]  # so that using the wrong model would show
    result = run(world, {"client_0": "global", "client_1": "local"})
    ground = of_task(records, "ground")
    sizes = {r["id"]: (64, 64) for r in ground}
    per_client = {
        "client_0": scores.score_records(answers["global"], records, sizes),
        "client_1": scores.score_records(answers["local"], records, sizes),
    }
    assert result["per_client"] == per_client
    assert result["vqa"]["accuracy"] == pytest.approx(
        (per_client["client_0"]["vqa"]["accuracy"] + per_client["client_1"]["vqa"]["accuracy"]) / 2
    )
    assert result["score"] == pytest.approx((per_client["client_0"]["score"] + per_client["client_1"]["score"]) / 2)
    assert result["n"] == 16 and result["score_metric"] == "vqa.accuracy"
    personalized = result["personalized"]
    assert personalized["model"] == "local"
    assert personalized["clients"]["client_1"] == scores.score_records(
        answers["local"], records[7:], sizes, metric="vqa.accuracy"
    )
    assert personalized["clients"]["client_0"] == scores.score_records(
        answers["global"], records[:7], sizes, metric="vqa.accuracy"
    )


@needs_java
def test_the_selection_split_scores_the_same_models_again(world: dict) -> None:
    """With the evaluated split itself as the selection split, the selection score is the split's
    own score: for the global model, and for local models the mean over them."""
    for adapters in ({"global": "global"}, {"client_0": "global", "client_1": "local"}):
        result = run(world, adapters, selection=(world["shards"], None))
        assert result["selection"] == {"split": "val", "score_metric": result["score_metric"],
                                       "score": pytest.approx(result["score"])}


def test_missing_caption_requirements_stop_the_evaluation_before_generating(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    caption = [{"id": "c", "task": "caption", "caption": "a red circle"}]
    monkeypatch.setattr(captions, "_java_version_output", lambda: 'openjdk version "17.0.15" 2025-04-15')
    monkeypatch.setattr(captions, "spice_lib_dir", lambda: tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: "/usr/bin/java")
    evaluate.check_requirements(caption, {"spice": False})
    evaluate.check_requirements([{"id": "v", "task": "vqa"}], {"spice": True})  # SPICE only scores captions
    with pytest.raises(RuntimeError, match="SPICE cannot run: it needs Java 8-11") as error:
        evaluate.check_requirements(caption, {"spice": True})
    assert "stanford-corenlp-3.6.0.jar" in str(error.value)
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="caption metrics need Java"):
        evaluate.check_requirements(caption, {})


def test_generation_lengths_per_task() -> None:
    assert evaluate.generation_lengths({"max_new_tokens": 4}) == {"vqa": 4, "classify": 4, "caption": 32, "ground": 24}
    assert evaluate.generation_lengths(EVAL) == {"vqa": 3, "classify": 3, "caption": 6, "ground": 9}


def test_client_splits_from_the_partition_index(tmp_path: Path) -> None:
    for k in (10, 2):
        atomic_write_json(tmp_path / f"client_{k:03d}.json", {"client": k, "train": ["t"], "test": [f"x{k}"]})
    (tmp_path / "counts.csv").write_text("")
    assert evaluate.read_client_splits(tmp_path, "test") == {"client_2": ["x2"], "client_10": ["x10"]}
    with pytest.raises(KeyError, match=r"client_002.json: no 'val' split \(has: client, test, train\)"):
        evaluate.read_client_splits(tmp_path, "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no client_\*\.json partition index files"):
        evaluate.read_client_splits(tmp_path / "empty", "test")
