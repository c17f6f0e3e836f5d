"""LLaVA in transformers (``llava-hf/llava-1.5-7b-hf``): CLIP vision tower, MLP projector, Llama."""

from fedumm.models.architectures.base import Architecture, square


def processor(tokenizer, config):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    size = config.vision_config.image_size
    return LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size=square(size)),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token=tokenizer.image_token,
        num_additional_image_tokens=1,  # CLIP's CLS token, which the "default" strategy drops
    )


LLAVA = Architecture(
    model_type="llava",
    vision="model.vision_tower",
    projector="model.multi_modal_projector",
    language="model.language_model",
    image_prompt="<image>",
    special_tokens={"image_token": "<image>"},
    token_config={"image_token_index": "image_token"},
    make_processor=processor,
    vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
)
