"""PaliGemma (``google/paligemma-3b-pt-224``): SigLIP, a linear projector, Gemma; the prompt (image and
prefix) and the suffix are told apart by ``token_type_ids`` (0 and 1), which fedumm's batches set."""

from fedumm.models.architectures.base import Architecture, square


def processor(tokenizer, config):
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    vision = config.vision_config
    image_processor = SiglipImageProcessorPil(size=square(vision.image_size))
    image_processor.image_seq_length = (vision.image_size // vision.patch_size) ** 2
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)


PALIGEMMA = Architecture(
    model_type="paligemma",
    vision="model.vision_tower",
    projector="model.multi_modal_projector",
    language="model.language_model",
    image_prompt="<image>",
    special_tokens={"image_token": "<image>"},
    token_config={"image_token_index": "image_token"},
    make_processor=processor,
    vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
)
