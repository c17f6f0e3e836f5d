"""Idefics3 / SmolVLM (``HuggingFaceTB/SmolVLM-Instruct``): a SigLIP encoder, a pixel-shuffle connector,
and a Llama language model kept under ``text_model``."""

from fedumm.models.architectures.base import Architecture


def processor(tokenizer, config):
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    vision = config.vision_config
    size = vision.image_size
    image_seq_len = (size // vision.patch_size) ** 2 // config.scale_factor**2
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": size}, max_image_size={"longest_edge": size}, do_image_splitting=False
    )
    return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len)


IDEFICS3 = Architecture(
    model_type="idefics3",
    vision="model.vision_model",
    projector="model.connector",
    language="model.text_model",
    image_prompt="<image>",
    special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                    "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
    token_config={"image_token_id": "image_token"},
    make_processor=processor,
    vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
)
