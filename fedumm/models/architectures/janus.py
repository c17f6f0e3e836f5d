"""Janus-Pro (``deepseek-community/Janus-Pro-7B``), a unified model: a SigLIP encoder and MLP aligner for
understanding, a VQ-VAE with its own embeddings, aligner and head for generation, one Llama LM.
The generation path (``fedumm.models.generation``) runs through the same LM; its own modules form
the ``generation`` parameter group."""

from fedumm.models.architectures.base import Architecture, square


def processor(tokenizer, config):
    from transformers import JanusImageProcessorPil, JanusProcessor

    vision = config.vision_config
    return JanusProcessor(
        image_processor=JanusImageProcessorPil(size=square(vision.image_size)),
        tokenizer=tokenizer,
        num_image_tokens=vision.num_image_tokens,
    )


JANUS = Architecture(
    model_type="janus",
    vision="model.vision_model",
    projector="model.aligner",
    language="model.language_model",
    image_prompt="<image_placeholder>",
    special_tokens={"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>",
                    "eoi_token": "<end_of_image>"},
    token_config={"image_token_id": "image_token"},
    make_processor=processor,
    vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    generation=("model.generation_embeddings", "model.generation_aligner", "model.generation_head"),
)
