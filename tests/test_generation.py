"""The image-generation path of a unified model (tiny Janus) and the image tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from workflow_util import TINY_HF_CONFIGS

from fedumm.data.geneval import benchmark_prompts
from fedumm.data.shapes_world import render_image
from fedumm.models.architectures import ARCHITECTURES
from fedumm.models.families.hf import tiny_config
from fedumm.models.generation import drop_prompts, generation_loss, sample_codes
from fedumm.models.image_tokenizers import GridTokenizer, NativeTokenizer
from fedumm.models.vlm import seeded


@pytest.fixture(scope="module")
def janus():
    from transformers import AutoModelForImageTextToText

    architecture = ARCHITECTURES["janus"]
    tokenizer = architecture.tiny_tokenizer(["a photo of two red circles"])
    with seeded(0):
        model = AutoModelForImageTextToText.from_config(tiny_config({"config": TINY_HF_CONFIGS["janus"]}, architecture, tokenizer))
    return model.eval(), tokenizer, architecture


def test_grid_codes_are_exact_for_benchmark_scenes_and_decode_round_trips() -> None:
    grid = GridTokenizer()
    rng = np.random.default_rng(0)
    for scene in benchmark_prompts(10, seed=4):
        expected = [0] * 9
        for obj in scene["objects"]:
            expected[obj["cell"]] = grid.code(obj["shape"], obj["color"])
        codes = grid.encode(render_image(scene["objects"], scene["domain"], 64, rng))
        assert codes == expected
        assert grid.encode(grid.decode(codes)) == codes
    assert grid.num_codes == 36 and grid.code("circle", "red") == 1
    with pytest.raises(ValueError, match="grid codes must be 9 values"):
        grid.decode([36] * 9)


def test_the_loss_is_cross_entropy_of_the_head_on_each_next_code(janus) -> None:
    model, _, _ = janus
    prompt = torch.tensor([[5, 6, 7], [0, 8, 9]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    codes = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]])
    loss = generation_loss(model, prompt, mask, codes)
    # The same by hand through Janus' own embedding of image tokens.
    embeds = torch.cat([model.get_input_embeddings()(prompt), model.prepare_embeddings_for_image_generation(codes[:, :-1])], 1)
    full_mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], 1)
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=full_mask,
                                        position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).last_hidden_state
    logits = model.model.generation_head(hidden[:, 2:])
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1)))
    loss.backward()
    assert model.model.generation_head.proj_out.weight.grad is not None


def test_dropping_a_prompt_keeps_only_its_image_start_token() -> None:
    mask = torch.ones(1000, 4, dtype=torch.long)
    dropped = drop_prompts(mask, 0.25, torch.Generator().manual_seed(0))
    rows = dropped[:, :-1].sum(dim=1) == 0
    assert 0.2 < rows.float().mean().item() < 0.3
    assert torch.equal(dropped[:, -1], mask[:, -1]) and torch.equal(dropped[~rows], mask[~rows])


def test_sampling_is_seeded_bounded_and_guided(janus) -> None:
    model, _, _ = janus
    prompt, mask = torch.tensor([[5, 6, 7]]).repeat(3, 1), torch.ones(3, 3, dtype=torch.long)
    first = sample_codes(model, prompt, mask, 9, 36, 3.0, torch.Generator().manual_seed(1))
    again = sample_codes(model, prompt, mask, 9, 36, 3.0, torch.Generator().manual_seed(1))
    assert first.shape == (3, 9) and torch.equal(first, again) and int(first.max()) < 36
    # guidance 1 is the conditional model alone: greedy codes equal the argmax of the conditional head
    greedy = sample_codes(model, prompt[:1], mask[:1], 1, 36, 1.0, torch.Generator(), temperature=0)
    text = model.get_input_embeddings()(prompt[:1])
    hidden = model.model.language_model(inputs_embeds=text, attention_mask=mask[:1]).last_hidden_state
    assert greedy.item() == model.model.generation_head(hidden[:, -1])[:, :36].argmax().item()


def test_the_native_tokenizer_is_the_checkpoint_s_vq_model(janus) -> None:
    model, _, architecture = janus
    processor = architecture.tiny_processor(architecture.tiny_tokenizer([]), model.config)
    native = NativeTokenizer(model, processor.image_processor)
    image = render_image(benchmark_prompts(1, seed=0)[0]["objects"], "plain", 64, np.random.default_rng(0))
    codes = native.encode(image)
    assert len(codes) == native.tokens_per_image == 16 and max(codes) < native.num_codes == 64
    assert native.decode(codes).size == (64, 64)
