"""The mixture dataset kind (fedumm.data.sources.mixture): two tiny shapes datasets mixed into one,
its records, images, card and errors; a multitask partition over its datasets; the rule wiring."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from workflow_util import job_counts, snakemake, tiny_config, write_config

from fedumm.config import ConfigError, load_experiments
from fedumm.data import shapes, shards, sources
from fedumm.data.sources import mixture
from fedumm.partition import schemes

PART_SPLITS = {"a": {"train": 12, "val": 3, "test": 5}, "b.2": {"train": 4, "val": 3, "test": 5}}
SPEC = {"kind": "mixture", "parts": ["a", "b.2"], "splits": {"train": 10, "val": 4, "test": 100}, "shard_size": 3, "seed": 0}


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    """Two shapes datasets at different seeds: their ids coincide, so only the prefix separates them."""
    root = tmp_path_factory.mktemp("parts")
    dirs = {"a": root / "a", "b.2": root / "b.2"}
    for seed, (name, path) in enumerate(dirs.items()):
        shapes.generate_shapes(path, splits=PART_SPLITS[name], seed=seed, image_size=32, shard_size=4)
    return dirs


def members(dataset_dir: Path, split: str) -> dict[str, tuple[str, bytes]]:
    """Image members of a split's shards: key -> (extension, bytes)."""
    found = {}
    for shard in shards.split_shards(dataset_dir, split):
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext != "json":
                    found[key] = (ext, tar.extractfile(member).read())
    return found


@pytest.fixture(scope="module")
def mixed(parts, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mixed") / "mix"
    return out, mixture.write_mixture("mix", SPEC, parts, out)


def test_spread_is_even_and_refills_from_parts_with_samples_left():
    assert mixture.spread(10, {"a": 12, "b": 4}) == {"a": 6, "b": 4}
    assert mixture.spread(7, {"a": 9, "b": 9, "c": 9}) == {"a": 3, "b": 2, "c": 2}
    assert mixture.spread(100, {"a": 3, "b": 5}) == {"a": 3, "b": 5}
    assert mixture.spread(5, {"a": 0, "b": 9}) == {"a": 0, "b": 5}
    assert mixture.spread(0, {"a": 3}) == {"a": 0}


def test_records_are_prefixed_unique_and_name_their_dataset(mixed, parts):
    out, card = mixed
    for split, expected in {"train": {"a": 6, "b.2": 4}, "val": {"a": 2, "b.2": 2}, "test": {"a": 5, "b.2": 5}}.items():
        records = shards.read_records(shards.split_shards(out, split))
        assert card["samples_per_part"][split] == expected
        assert card["num_samples"][split] == len(records) == sum(expected.values())
        assert len({r["id"] for r in records}) == len(records)
        for part, prefix in (("a", "a_"), ("b.2", "b_2_")):
            own = [r for r in records if r["dataset"] == part]
            assert len(own) == expected[part]
            assert all(r["id"].startswith(prefix) and r["split"] == split for r in own)
            originals = {r["id"]: r for r in shards.read_records(shards.split_shards(parts[part], split))}
            for record in own:  # everything but id and dataset is the part's record
                original = originals[record["id"].removeprefix(prefix)]
                assert {k: v for k, v in record.items() if k not in ("id", "dataset")} == {
                    k: v for k, v in original.items() if k != "id"}
        assert card["value_counts"][split] == shards.value_counts(records)
    assert card["shards"]["train"] == ["train-00000.tar", "train-00001.tar", "train-00002.tar", "train-00003.tar"]
    assert (card["kind"], card["parts"], card["splits_requested"]) == ("mixture", ["a", "b.2"], SPEC["splits"])


def test_images_are_the_parts_bytes(mixed, parts):
    out, _ = mixed
    images = members(out, "train")
    originals = {"a_": members(parts["a"], "train"), "b_2_": members(parts["b.2"], "train")}
    assert len(images) == 10
    for key, image in images.items():
        prefix = "a_" if key.startswith("a_") else "b_2_"
        assert image == originals[prefix][key.removeprefix(prefix)]


def test_mixing_is_deterministic_and_seeded(mixed, parts, tmp_path):
    out, _ = mixed
    again = mixture.write_mixture("mix", SPEC, parts, tmp_path / "again")
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in (tmp_path / "again").iterdir())
    assert all((out / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    reseeded = mixture.write_mixture("mix", {**SPEC, "seed": 1}, parts, tmp_path / "reseeded")
    ids = lambda d: [r["id"] for r in shards.read_records(shards.split_shards(d, "train"))]  # noqa: E731
    assert again["samples_per_part"] == reseeded["samples_per_part"]
    assert ids(out) != ids(tmp_path / "reseeded")


def test_a_split_missing_from_a_part_is_an_error_naming_both(parts, tmp_path):
    spec = {**SPEC, "splits": {**SPEC["splits"], "public": 4}}
    with pytest.raises(ValueError, match=r"mixture part 'a' .* has no 'public' split"):
        mixture.write_mixture("mix", spec, parts, tmp_path / "out")


def test_multitask_partition_by_dataset_gives_each_client_one_dataset(mixed):
    out, _ = mixed
    records = {split: shards.read_records(shards.split_shards(out, split)) for split in schemes.SPLITS}
    labels = {split: [schemes.label_of(r, "dataset") for r in rs] for split, rs in records.items()}
    parts = schemes.partition_splits(labels, scheme="multitask", num_clients=2, seed=0, alpha=None, min_size=1)
    for split, split_parts in parts.items():
        held = [{labels[split][i] for i in part} for part in split_parts]
        assert sorted(h.pop() for h in held if len(h) == 1) == ["a", "b.2"]
        assert sorted(i for part in split_parts for i in part) == list(range(len(labels[split])))


def test_the_dataset_label_needs_a_mixture(parts):
    record = shards.read_records(shards.split_shards(parts["a"], "train"))[0]
    with pytest.raises(ValueError, match=r"label field 'dataset': record 'shapes-train-000000' has no 'dataset' field"):
        schemes.label_of(record, "dataset")


def mixture_config(private: Path = Path("/nonexistent"), **mix) -> dict:
    config = tiny_config({"multi": {"dataset": "mix", "clients": 3, "partition": {"scheme": "multitask", "label": "dataset"}}})
    config["datasets"]["shapes_b"] = {**config["datasets"]["shapes"], "seed": 1}
    config["datasets"]["private"] = {"kind": "folder", "path": str(private), "splits": {"train": 50, "val": 5, "test": 10}}
    config["datasets"]["mix"] = {"kind": "mixture", "parts": ["shapes", "shapes_b", "private"],
                                 "splits": {"train": 60, "val": 6, "test": 12}, "shard_size": 50, **mix}
    return config


def test_names_pattern_sends_a_mixture_only_to_its_rule():
    datasets = mixture_config()["datasets"]
    assert sources.names_pattern(datasets, group="mixture") == "mix"
    assert sources.names_pattern(datasets, downloaded=True) == "private"
    assert sources.names_pattern(datasets, downloaded=False) == "shapes|shapes_unified|shapes_b"


@pytest.fixture
def private(tmp_path) -> Path:
    """A folder dataset's folder: the config check wants it and its card.json to exist."""
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "card.json").write_text("{}")
    return folder


def test_config_rejects_unknown_or_nested_parts(schema, private):
    assert set(load_experiments(mixture_config(private), schema)) == {"multi"}
    with pytest.raises(ConfigError, match=r"'datasets\.mix\.parts': unknown dataset 'vqa'"):
        load_experiments(mixture_config(private, parts=["shapes", "vqa"]), schema)
    config = mixture_config(private)
    config["datasets"]["mix2"] = {"kind": "mixture", "parts": ["mix"], "splits": {"train": 6, "val": 0, "test": 1}}
    with pytest.raises(ConfigError, match=r"'datasets\.mix2\.parts': 'mix' is itself a mixture"):
        load_experiments(config, schema)
    with pytest.raises(ConfigError, match=r"'datasets\.mix\.parts': part 'private' has no 'public' split"):
        load_experiments(mixture_config(private, splits={"public": 5, "train": 60, "val": 6, "test": 12}), schema)
    with pytest.raises(ConfigError, match=r"'datasets\.private\.path': folder '/nonexistent' does not exist"):
        load_experiments(mixture_config(), schema)


def test_dry_run_schedules_the_mixture_after_its_parts(tmp_path, private):
    write_config(tmp_path, mixture_config(private))
    dry = snakemake(tmp_path, "-n").stdout  # the whole workflow: one run keeps the test under 10 s
    counts = job_counts(dry)
    assert {rule: counts[rule] for rule in ("shapes_data", "download_dataset", "normalize_dataset", "mixture_dataset")} == {
        "shapes_data": 2, "download_dataset": 1, "normalize_dataset": 1, "mixture_dataset": 1}
    assert counts["partition"] == 1
    mix_job = dry.index("rule mixture_dataset:")
    assert all(dry.index(f"rule {rule}:") < mix_job for rule in ("shapes_data", "normalize_dataset"))
    assert "logs/mixture_dataset/mix.log" in dry and "output: results/data/mix" in dry
