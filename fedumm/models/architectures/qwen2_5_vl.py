"""Qwen2.5-VL (``Qwen/Qwen2.5-VL-7B-Instruct``, the understanding backbone of BLIP3o): a native-resolution
ViT whose patch merger (``visual.merger``) is the projector, and a Qwen2 language model with M-RoPE."""

from fedumm.models.architectures.base import Architecture

TINY_IMAGE_SIZE = 64


def processor(tokenizer, config):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from fedumm.models.architectures.qwen2_5_vl_processor import (
        ImageOnlyQwen2_5_VLProcessor,
    )

    vision = config.vision_config
    pixels = TINY_IMAGE_SIZE * TINY_IMAGE_SIZE
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size, min_pixels=pixels, max_pixels=pixels,
    )
    return ImageOnlyQwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer)


QWEN2_5_VL = Architecture(
    model_type="qwen2_5_vl",
    vision="model.visual",
    projector="model.visual.merger",
    language="model.language_model",
    image_prompt="<|vision_start|><|image_pad|><|vision_end|>",
    special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                    "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
    token_config={"image_token_id": "image_token", "video_token_id": "video_token",
                  "vision_start_token_id": "vision_start_token", "vision_end_token_id": "vision_end_token"},
    make_processor=processor,
    vision_lora_targets=("qkv", "proj", "gate_proj", "up_proj", "down_proj"),
)
