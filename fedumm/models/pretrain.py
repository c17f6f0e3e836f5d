"""The pretrained starting point of federated fine-tuning (the ``base_model`` rule).

Federated fine-tuning starts from a pretrained VLM. For hub backbones that is their
published weights plus a connector; for inline (tiny, random-init) components this module
pretrains them briefly on the dataset's public split, as LLaVA's stage 1 aligns a new
connector on captions before instruction tuning. Pretrained hub components stay frozen,
so the artifact stores only what was trained here (see ``fedumm.models.vlm.save_base``).
"""

from __future__ import annotations

from pathlib import Path

from fedumm.data import shards
from fedumm.federated import planning
from fedumm.models import batches, images, text
from fedumm.models.training import OptimConfig, configure_torch, train
from fedumm.models.vlm import build_vlm, save_base

PARTS = {"vision": "vision_tower", "language": "language_model"}
ALL_PARTS = ("connector", *PARTS.values())


def trained_parts(spec: dict) -> list[str]:
    """Submodules pretrained (and so stored) here: the connector and every inline component."""
    inline = [PARTS[part] for part in ("vision", "language") if "config" in spec[part]]
    return sorted(["connector", *inline])


def build_base_model(spec: dict, public_shards: list[Path], out_dir: Path, threads: int) -> dict:
    """Build the VLM of ``spec``, pretrain its new parts on ``public_shards``, save it to ``out_dir``.

    Returns a summary (steps, first and last loss) for the rule's log.
    """
    seed = spec.get("seed", 0)
    device = configure_torch(seed, threads)
    records = shards.read_records(public_shards)
    tokenizer = text.load_tokenizer(spec["tokenizer"], shards.vocabulary(records))
    architecture = {key: value for key, value in spec.items() if key not in ("seed", "pretrain")}
    vlm = build_vlm(architecture, vocab_size=len(tokenizer), seed=seed)
    parts = trained_parts(spec)
    for name, param in vlm.named_parameters():
        param.requires_grad = name.split(".")[0] in parts

    pretrain = spec.get("pretrain") or {"steps": 0}
    losses: list[float] = []
    if pretrain["steps"] > 0:
        examples = batches.build_examples(records, tokenizer, pretrain.get("tasks", ["caption"]))
        visual = batches.VisualSource(
            public_shards, {r["id"] for r in records}, transform=images.image_transform(architecture)
        )
        index_batches = batches.shuffled_batches(
            len(examples), pretrain.get("batch_size", 32), pretrain["steps"],
            seed=planning.derive_seed(seed, "pretrain"),
        )
        stream = (
            batches.collate([examples[i] for i in indices], visual, tokenizer.pad_token_id)
            for indices in index_batches
        )
        optim = OptimConfig(lr=pretrain.get("lr", 1e-3), warmup_ratio=0.05, grad_clip=1.0)
        losses = train(vlm.to(device), stream, pretrain["steps"], optim, device, description="pretrain")
    save_base(vlm.cpu(), tokenizer, architecture, out_dir, trained_parts=parts)
    return {
        "trained_parts": parts,
        "steps": len(losses),
        "first_loss": losses[0] if losses else None,
        "last_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
    }
