"""Emu3 (``BAAI/Emu3-Chat-hf``), encoder-free: a VQ tokenizer turns the image into codes that enter the one
language model as tokens of its own vocabulary (``vocabulary_map``), one end-of-line token per row.
There is no vision encoder or projector to adapt: only the language model's groups exist."""

from fedumm.models.architectures.base import Architecture

TINY_IMAGE_SIZE = 64
VISUAL_TOKEN = "<|visual token {:06d}|>"
EOL, EOF = "<|extra_200|>", "<|extra_201|>"


def add_visual_tokens(config: dict, tokenizer) -> None:
    """Give every VQ code a token of the tiny vocabulary and map the names Emu3 looks up to their ids."""
    codes = [VISUAL_TOKEN.format(code) for code in range(config["vq_config"]["codebook_size"])]
    tokenizer.add_tokens(codes, special_tokens=True)
    names = [*codes, tokenizer.image_token, EOL, EOF, tokenizer.boi_token, tokenizer.eoi_token]
    config["vocabulary_map"] = {name: tokenizer.convert_tokens_to_ids(name) for name in names}


def processor(tokenizer, config):
    from transformers import Emu3ImageProcessor, Emu3Processor

    pixels = TINY_IMAGE_SIZE * TINY_IMAGE_SIZE
    return Emu3Processor(image_processor=Emu3ImageProcessor(min_pixels=pixels, max_pixels=pixels), tokenizer=tokenizer)


EMU3 = Architecture(
    model_type="emu3",
    vision=None,
    projector=None,
    language="model.text_model",
    image_prompt="<image>",
    special_tokens={"image_token": "<image>", "boi_token": "<|image start|>", "eoi_token": "<|image end|>",
                    "image_wrapper_token": "<|image token|>", "eof_token": EOF, "eol_token": EOL},
    token_config={},
    make_processor=processor,
    adapt_tiny_config=add_visual_tokens,
)
