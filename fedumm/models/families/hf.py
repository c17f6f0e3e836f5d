"""The ``hf`` family: any checkpoint that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load.

A model entry names the checkpoint by ``id`` (a hub id or a local directory, loaded with its own
processor and chat template) or gives an inline ``config`` (random initialisation: tiny offline
models for tests and demos, whose tokenizer is built from the dataset vocabulary and whose
processor is the architecture's own class around it). What differs between architectures lives
in one small module each (``fedumm.models.architectures``); this module is the rest.

Records become the processor's output for the prompt (with the image, through the chat template
when the checkpoint has one) followed by the target's tokens and eos, with labels on the target
tokens only. Generation is the model's own ``generate`` on left-padded prompts. Adapters are plain
peft adapters of the plain transformers class: ``PeftModel.from_pretrained(
AutoModelForImageTextToText.from_pretrained(base), round_dir)`` loads them without fedumm.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import peft
import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from fedumm.artifacts import BASE_SPEC
from fedumm.data.shards import read_records, read_samples, vocabulary
from fedumm.federated.planning import derive_seed
from fedumm.io import atomic_dir, atomic_write_json
from fedumm.models import batches, text
from fedumm.models.architectures import (
    ARCHITECTURES,
    Architecture,
    architecture_of,
)
from fedumm.models.families.base import LoadedBase
from fedumm.models.generation import GenerationSettings, drop_prompts, sample_codes
from fedumm.models.image_tokenizers import ImageTokenizer, build_image_tokenizer
from fedumm.models.training import OptimConfig, configure_torch, train
from fedumm.models.vlm import seeded

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
"""Processor outputs with one value per token; every other output belongs to the image."""
TARGET_TOKEN_TYPE = {"token_type_ids": 1, "mm_token_type_ids": 0}
"""The value of these per-token outputs on target tokens (PaliGemma's suffix is type 1; text is mm type 0)."""
PAD_VALUES = {"attention_mask": 0, "labels": text.IGNORE_INDEX, "token_type_ids": 0, "mm_token_type_ids": 0}


def _torch_dtype(spec: dict) -> torch.dtype:
    return getattr(torch, spec.get("dtype", "float32"))


def prompt_text(processor, architecture: Architecture, question: str | None) -> str:
    """The prompt of a record: the checkpoint's chat template around the image and the question
    (or the captioning prompt) when it has one, else the image placeholder and the plain template."""
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"}, {"type": "text", "text": question or text.CAPTION_PROMPT}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    return f"{architecture.image_prompt} {text.format_prompt(question)}"


def target_text(processor, answer: str) -> str:
    # The plain template continues after "answer:" with a space; a chat template starts the answer afresh.
    return answer.strip() if getattr(processor, "chat_template", None) else text.format_target(answer)


def _pad(rows: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    width = max(len(row) for row in rows)
    padded = [
        torch.cat([row.new_full((width - len(row),), value), row]) if left else torch.cat([row, row.new_full((width - len(row),), value)])
        for row in rows
    ]
    return torch.stack(padded)


def generation_prompt_text(processor, prompt: str) -> str:
    """The prompt of a text-to-image record, ending with the image-start token (Janus' generation
    prompt): through the chat template when the checkpoint has one."""
    if getattr(processor, "chat_template", None):
        conversation = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    else:
        prompt = f"{prompt} "
    return f"{prompt}{processor.image_start_token}"


class HFInputs:
    """Records of one split through a family's processor; images are processed once per record.

    ``generate`` records (text-to-image) need ``image_tokenizer`` and the model entry's ``generation``
    block (``prompt_dropout`` for classifier-free guidance); their training target is the image's codes.
    """

    def __init__(self, model_config, processor, architecture: Architecture, shards: list[Path], ids: set[str],
                 image_tokenizer: ImageTokenizer | None = None, generation: GenerationSettings | None = None) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.architecture = architecture
        self.image_tokenizer = image_tokenizer
        self.generation = generation
        self.images = {sample["id"]: sample["image"] for sample in read_samples(shards, ids)}
        missing = ids - set(self.images)
        if missing:
            raise KeyError(f"no image for {len(missing)} sample(s), e.g. {sorted(missing)[0]}")
        self._prompts: dict[tuple[str, str | None], dict[str, torch.Tensor]] = {}

    def _generation_example(self, record: dict) -> dict:
        if self.image_tokenizer is None:
            raise ValueError(f"record {record['id']!r} is a text-to-image record, but the model does not generate: "
                             "give its model entry a `generation` block (a unified model such as Janus)")
        codes = self.image_tokenizer.encode(self.images[record["id"]])
        return {"id": record["id"], "task": batches.GENERATE, "prompt": self._generation_prompt_ids(record["prompt"]),
                "codes": torch.tensor(codes, dtype=torch.long)}

    def _generation_prompt_ids(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer(generation_prompt_text(self.processor, prompt), add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def _left_padded(self, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and their attention mask."""
        return _pad(rows, self.tokenizer.pad_token_id, left=True), _pad([torch.ones_like(row) for row in rows], 0, left=True)

    def prompt_batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and attention mask of text-to-image ``prompts``."""
        return self._left_padded([self._generation_prompt_ids(prompt) for prompt in prompts])

    def _collate_generation(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Left-padded prompts (each dropped, for classifier-free guidance, at ``prompt_dropout``
        with torch's seeded generator) and the image codes."""
        ids, mask = self._left_padded([example["prompt"] for example in examples])
        mask = drop_prompts(mask, self.generation.prompt_dropout, generator=None)
        return {"prompt_ids": ids, "prompt_mask": mask, "image_codes": torch.stack([example["codes"] for example in examples])}

    @torch.no_grad()
    def generate_images(self, model: torch.nn.Module, prompts: list[str], generator: torch.Generator, device) -> list:
        """One image per prompt, sampled code by code with the model entry's classifier-free guidance
        and temperature, decoded by the image tokenizer."""
        ids, mask = self.prompt_batch(prompts)
        codes = sample_codes(model, ids.to(device), mask.to(device), self.image_tokenizer.tokens_per_image,
                             self.image_tokenizer.num_codes, self.generation.guidance_scale, generator,
                             temperature=self.generation.temperature)
        return [self.image_tokenizer.decode(row) for row in codes.cpu().tolist()]

    def _prompt(self, record_id: str, question: str | None) -> dict[str, torch.Tensor]:
        """The processor's output (batch of one) for the prompt of ``question`` on the record's image."""
        key = (record_id, question)
        if key not in self._prompts:
            encoded = self.processor(
                images=[self.images[record_id]],
                text=[prompt_text(self.processor, self.architecture, question)],
                return_tensors="pt",
            )
            # PaliGemma's processor adds labels of its own; fedumm's come from the targets.
            self._prompts[key] = {name: value for name, value in encoded.items() if name != "labels"}
        return self._prompts[key]

    def examples(self, records: list[dict], tasks: Sequence[str] | None = None) -> list[dict]:
        """One example per (record, target); with ``tasks``, a text-to-image record is trained on
        ``generate`` (when listed) and every other record on the other listed tasks."""
        examples = []
        for record in records:
            if batches.record_task(record) == batches.GENERATE:
                if tasks is None or batches.GENERATE in tasks:
                    examples.append(self._generation_example(record))
                continue
            record_tasks = [task for task in tasks if task != batches.GENERATE] if tasks is not None else None
            for task in record_tasks if record_tasks is not None else [batches.record_task(record)]:
                for question, target in batches.targets_of(record, task):
                    self._prompt(record["id"], question)  # processed here once, then reused by every batch
                    target_ids = self.tokenizer(target_text(self.processor, target), add_special_tokens=False)["input_ids"]
                    target_ids = torch.tensor([*target_ids, self.tokenizer.eos_token_id], dtype=torch.long)
                    examples.append({"id": record["id"], "question": question, "target": target_ids})
        return examples

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Right-padded prompt + target; labels only on the target; image tensors concatenated. A batch
        of text-to-image examples: left-padded prompts and the image codes (``_collate_generation``)."""
        generation = [example.get("task") == batches.GENERATE for example in examples]
        if any(generation):
            if not all(generation):
                raise ValueError("a batch mixes text-to-image and other examples (batches.modality_batches keeps them apart)")
            return self._collate_generation(examples)
        rows: dict[str, list[torch.Tensor]] = {}
        images: dict[str, list[torch.Tensor]] = {}
        for example in examples:
            prompt = self._prompt(example["id"], example["question"])
            target = example["target"]
            length = prompt["input_ids"].shape[1]
            rows.setdefault("labels", []).append(torch.cat([torch.full((length,), text.IGNORE_INDEX), target]))
            for key, value in prompt.items():
                if key == "input_ids":
                    rows[key] = rows.get(key, []) + [torch.cat([value[0], target])]
                elif key == "attention_mask":
                    rows[key] = rows.get(key, []) + [torch.cat([value[0], torch.ones_like(target)])]
                elif key in TEXT_KEYS:
                    rows[key] = rows.get(key, []) + [torch.cat([value[0], torch.full_like(target, TARGET_TOKEN_TYPE[key])])]
                else:
                    images.setdefault(key, []).append(value)
        batch = {key: _pad(values, PAD_VALUES.get(key, self.tokenizer.pad_token_id), left=False) for key, values in rows.items()}
        return {**batch, **{key: torch.cat(values) for key, values in images.items()}}

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, records: list[dict], max_new_tokens: int, device) -> list[str]:
        prompts = [self._prompt(record["id"], batches.prompt_question(record)) for record in records]
        inputs = {
            key: _pad([prompt[key][0] for prompt in prompts], PAD_VALUES.get(key, self.tokenizer.pad_token_id), left=True)
            if key in TEXT_KEYS else torch.cat([prompt[key] for prompt in prompts])
            for key in prompts[0]
        }
        generated = model.generate(
            **{key: value.to(device) for key, value in inputs.items()},
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return text.decode_answers(self.tokenizer, generated[:, inputs["input_ids"].shape[1]:])

    def image_sizes(self, ids: set[str]) -> dict[str, tuple[int, int]]:
        return {i: self.images[i].size for i in ids}


def _module_regex(prefix: str, names: Sequence[str], exclude: str | None = None) -> str:
    guard = f"(?!{re.escape(exclude[len(prefix) + 1:])}\\.)" if exclude and exclude.startswith(prefix + ".") else ""
    return rf"{re.escape(prefix)}\.{guard}.*\.(?:{'|'.join(re.escape(name) for name in names)})"


def tiny_config(spec: dict, architecture: Architecture, tokenizer) -> AutoConfig:
    """The inline config with the vocabulary and special-token ids of ``tokenizer``."""
    config = json.loads(json.dumps(spec["config"]))
    if architecture.adapt_tiny_config is not None:
        architecture.adapt_tiny_config(config, tokenizer)
    text_config = config.setdefault("text_config", {})
    text_config.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    for key, token in architecture.token_config.items():
        config[key] = tokenizer.convert_tokens_to_ids(getattr(tokenizer, token))
    return AutoConfig.for_model(**config)


class HFFamily:
    name = "hf"
    feature_cache = False

    def build_base(self, spec: dict, public_shards: list[Path] | None, out_dir: Path, threads: int) -> dict:
        """A hub id or local directory: only ``spec.json`` (the weights stay where they are). An inline
        config: the random-init model, its tokenizer and processor, after the optional pretraining of
        the whole model on the public split, saved so that ``from_pretrained(out_dir)`` loads it."""
        if "config" not in spec:
            with atomic_dir(out_dir) as tmp:
                atomic_write_json(tmp / BASE_SPEC, {"spec": spec})
            return {"source": spec["id"], "steps": 0}
        seed = spec.get("seed", 0)
        device = configure_torch(seed, threads)
        architecture = ARCHITECTURES[spec["config"]["model_type"]]
        records = read_records(public_shards)
        tokenizer = architecture.tiny_tokenizer(vocabulary(records))
        config = tiny_config(spec, architecture, tokenizer)
        with seeded(seed):
            model = AutoModelForImageTextToText.from_config(config)
        processor = architecture.tiny_processor(tokenizer, config)
        losses: list[float] = []
        pretrain = spec.get("pretrain") or {"steps": 0}
        if pretrain["steps"] > 0:
            base = LoadedBase(model=model, processor=processor, spec=spec, family=self)
            inputs = self.inputs(base, public_shards, {record["id"] for record in records})
            examples = inputs.examples(records, pretrain.get("tasks", ["caption"]))
            order = batches.modality_batches([batches.example_modality(example) for example in examples],
                                             pretrain.get("batch_size", 32), pretrain["steps"],
                                             seed=derive_seed(seed, "pretrain"))
            stream = (inputs.collate([examples[i] for i in indices]) for indices in order)
            optim = OptimConfig(lr=pretrain.get("lr", 1e-3), warmup_ratio=0.05, grad_clip=1.0)
            losses = train(model.to(device), stream, pretrain["steps"], optim, device, description="pretrain")
        with atomic_dir(out_dir) as tmp:
            model.cpu().save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / BASE_SPEC, {"spec": spec})
        return {"steps": len(losses), "first_loss": losses[0] if losses else None,
                "last_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None}

    def export(self, base: LoadedBase, merged: torch.nn.Module, out_dir: Path) -> str:
        """``save_pretrained`` of the merged model and its tokenizer (and processor, for hub models):
        plain transformers loads it. ``spec.json`` points fedumm at the directory itself."""
        spec = base.spec if "config" in base.spec else {**base.spec, "id": str(Path(out_dir).resolve())}
        with atomic_dir(out_dir) as tmp:
            merged.cpu().save_pretrained(tmp)
            if "config" in base.spec:
                base.processor.tokenizer.save_pretrained(tmp)
            else:
                base.processor.save_pretrained(tmp)
            atomic_write_json(tmp / BASE_SPEC, {"spec": spec})
        return f"transformers.AutoModelForImageTextToText.from_pretrained({str(out_dir)!r})"

    def load_base(self, base_dir: Path) -> LoadedBase:
        spec = json.loads((base_dir / BASE_SPEC).read_text(encoding="utf-8"))["spec"]
        source = str(base_dir) if "config" in spec else spec["id"]
        options = {"dtype": _torch_dtype(spec)}
        if spec.get("attn_implementation"):
            options["attn_implementation"] = spec["attn_implementation"]
        if torch.cuda.is_available():
            options["device_map"] = {"": torch.cuda.current_device()}
        model = AutoModelForImageTextToText.from_pretrained(source, **options)
        architecture = architecture_of(model)
        if "config" in spec:
            processor = architecture.tiny_processor(AutoTokenizer.from_pretrained(source), model.config)
        else:
            processor = AutoProcessor.from_pretrained(source)
            if processor.tokenizer.pad_token is None:
                processor.tokenizer.pad_token = processor.tokenizer.eos_token
        if spec.get("gradient_checkpointing"):
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        return LoadedBase(model=model, processor=processor, spec=spec, family=self)

    def adapter_config(self, model: torch.nn.Module, lora: dict, connector_trainable: bool,
                       generation_trainable: bool = False) -> peft.LoraConfig:
        """LoRA on the language model (and vision encoder), plus full trained copies (peft's
        ``modules_to_save``) of the projector, of the modules named in ``lora.modules_to_save`` and,
        for a model that generates, of its generation path: the ``generation`` adapter of FedUMM's
        per-modality adapters."""
        architecture = architecture_of(model)
        branches = [_module_regex(architecture.language, lora["target_modules"])] if lora.get("target_modules") else []
        if lora.get("vision_target_modules"):
            if architecture.vision is None:
                raise ValueError(f"{architecture.model_type} has no vision encoder: lora.vision_target_modules must be empty")
            branches.append(_module_regex(architecture.vision, lora["vision_target_modules"], exclude=architecture.projector))
        if not branches:
            raise ValueError("lora: at least one of `target_modules` / `vision_target_modules` must be non-empty")
        if connector_trainable and architecture.projector is None:
            raise ValueError(f"{architecture.model_type} has no projector to train: use tuning.mode lora")
        if generation_trainable and not architecture.generation:
            raise ValueError(f"{architecture.model_type} does not generate images: remove the model's `generation` block")
        trained_copies = ([architecture.projector] if connector_trainable else []) + (
            list(architecture.generation) if generation_trainable else []) + list(lora.get("modules_to_save", []))
        return peft.LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora.get("dropout", 0.0),
            target_modules=f"^(?:{'|'.join(branches)})$",
            modules_to_save=trained_copies or None,
            bias="none",
        )

    def inputs(self, base: LoadedBase, shards: list[Path], ids: set[str], feature_file: Path | None = None) -> HFInputs:
        if feature_file is not None:
            raise ValueError("the hf family has no feature cache")
        generation = GenerationSettings(**base.spec["generation"]) if base.spec.get("generation") else None
        image_tokenizer = (build_image_tokenizer(generation.image_tokenizer, base.model,
                                                 getattr(base.processor, "image_processor", None))
                           if generation else None)
        return HFInputs(base.model.config, base.processor, architecture_of(base.model), shards, ids,
                        image_tokenizer=image_tokenizer, generation=generation)
