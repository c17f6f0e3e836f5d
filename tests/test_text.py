"""Word-level tokenizer, prompt template, and batch collation (fedumm.models.text)."""

import pytest
import torch
from transformers import AutoTokenizer

from fedumm.models.text import (
    IGNORE_INDEX,
    build_wordlevel_tokenizer,
    collate_train,
    decode_answers,
    encode_example,
    encode_prompts,
    format_prompt,
    format_target,
    load_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_wordlevel_tokenizer(["What color is the Cat?", "red", "blue", "two cats"])


def ids(tokenizer, *words):
    return [tokenizer.convert_tokens_to_ids(word) for word in words]


def test_prompt_template():
    assert format_prompt("What color is it? ") == "question: What color is it? answer:"
    assert format_prompt(None) == "caption:"
    assert format_target(" red ") == " red"


def test_vocabulary_is_specials_then_sorted_words(tokenizer):
    vocab = tokenizer.get_vocab()
    assert [vocab[token] for token in ("<pad>", "<unk>", "<bos>", "<eos>")] == [0, 1, 2, 3]
    words = sorted(set(vocab) - {"<pad>", "<unk>", "<bos>", "<eos>"}, key=vocab.get)
    # template words are always present; input is lower-cased and punctuation is split off
    assert words == [":", "?", "answer", "blue", "caption", "cat", "cats", "color", "is", "question", "red", "the", "two", "what"]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2, 3)


def test_vocabulary_does_not_depend_on_word_order():
    forward = build_wordlevel_tokenizer(["red", "blue cat"]).get_vocab()
    backward = build_wordlevel_tokenizer(["blue cat", "red"]).get_vocab()
    assert forward == backward


def test_tokenizer_splits_punctuation_and_maps_unknown_words(tokenizer):
    encoded = tokenizer("What color, Cat?", add_special_tokens=False)["input_ids"]
    assert encoded == ids(tokenizer, "what", "color") + [tokenizer.unk_token_id] + ids(tokenizer, "cat", "?")


def test_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 2, 3, 1)
    text = "what color is the cat?"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_load_tokenizer_from_spec(tokenizer, tmp_path):
    assert load_tokenizer({"wordlevel": True}, ["red"]).get_vocab()["red"] == 8  # after 4 specials and ":", "answer", "caption", "question"
    tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer({"id": str(tmp_path)}).get_vocab() == tokenizer.get_vocab()
    with pytest.raises(ValueError, match="words"):
        load_tokenizer({"wordlevel": True})


def test_encode_example_masks_prompt(tokenizer):
    example = encode_example(tokenizer, "What color is the cat?", "Red")
    prompt = [2] + ids(tokenizer, "question", ":", "what", "color", "is", "the", "cat", "?", "answer", ":")
    assert example["input_ids"] == prompt + ids(tokenizer, "red") + [3]
    assert example["labels"] == [IGNORE_INDEX] * len(prompt) + ids(tokenizer, "red") + [3]


def test_encode_caption_example(tokenizer):
    example = encode_example(tokenizer, None, "two cats")
    assert example["input_ids"] == [2] + ids(tokenizer, "caption", ":", "two", "cats") + [3]
    assert example["labels"] == [IGNORE_INDEX] * 3 + ids(tokenizer, "two", "cats") + [3]


def test_collate_train_right_pads(tokenizer):
    long = encode_example(tokenizer, "what color is the cat?", "red")
    short = encode_example(tokenizer, None, "blue")
    batch = collate_train([long, short], tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 13)
    assert batch["input_ids"][1].tolist() == short["input_ids"] + [0] * 8
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 8
    assert batch["labels"][1].tolist() == short["labels"] + [IGNORE_INDEX] * 8
    assert batch["attention_mask"][0].sum().item() == 13


def test_encode_prompts_left_pads(tokenizer):
    batch = encode_prompts(tokenizer, ["what color?", None])
    caption = [2] + ids(tokenizer, "caption", ":")
    assert batch["input_ids"][1].tolist() == [0] * 5 + caption
    assert batch["attention_mask"].tolist() == [[1] * 8, [0] * 5 + [1] * 3]
    assert batch["input_ids"][0, -1].item() == tokenizer.convert_tokens_to_ids(":")


def test_decode_answers_stops_at_eos(tokenizer):
    red, blue, two, cats = ids(tokenizer, "red", "blue", "two", "cats")
    token_ids = torch.tensor([[red, 3, blue, 0], [two, cats, 0, 0], [3, red, 0, 0]])
    assert decode_answers(tokenizer, token_ids) == ["red", "two cats", ""]
    assert decode_answers(tokenizer, [[blue]]) == ["blue"]
