"""Text side of the VLM: tokenizers, the single prompt template, and batch collation.

The prompt template follows the short-answer style of LLaVA-1.5 VQA fine-tuning, reduced to a
plain-text form so that it also works with the word-level tokenizer used for tiny test models:

    VQA:        "question: {question} answer:" -> " {answer}" + eos
    captioning: "caption:"                     -> " {caption}" + eos

Classification and grounding use the VQA form (the answer being the class label, or the box
written as text by ``fedumm.evaluation.grounding.format_box``); ``fedumm.models.batches`` picks a record's form
from its task.

Training examples put the loss only on the target and eos (prompt labels are -100, as in
LLaVA's `preprocess`); generation prompts are left-padded so that new tokens are appended
directly after every prompt.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

IGNORE_INDEX = -100
"""Label value skipped by the causal-LM cross-entropy (PyTorch/transformers convention)."""

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
"""Word-level special tokens; their position in this tuple is their id (`<pad>` is 0)."""

QUESTION_TEMPLATE = "question: {question} answer:"
CAPTION_PROMPT = "caption:"


def format_prompt(question: str | None) -> str:
    """The prompt shown to the model: a VQA question, or the captioning prompt when `question` is None."""
    if question is None:
        return CAPTION_PROMPT
    return QUESTION_TEMPLATE.format(question=question.strip())


def format_target(answer: str) -> str:
    """The supervised continuation of a prompt (eos is appended at tokenization time)."""
    return " " + answer.strip()


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Punctuation is isolated per character so that "red?" and "red" share the token "red".
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def _words_of(texts: Sequence[str]) -> set[str]:
    """Lower-cased word-level tokens of `texts`, split exactly as the tokenizer will split them."""
    splitter = _pre_tokenizer()
    return {word for text in texts for word, _ in splitter.pre_tokenize_str(text.lower())}


def build_wordlevel_tokenizer(
    words: Sequence[str], extra_special_tokens: dict[str, str] | None = None
) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over `<pad>`=0, `<unk>`, `<bos>`, `<eos>` and `words`.

    `words` may be whole sentences: they are split with the tokenizer's own pre-tokenizer
    (whitespace, then every punctuation character). The words of the prompt template are always
    included, and the vocabulary is sorted so that it does not depend on the order of `words`.
    `extra_special_tokens` (attribute name -> token, e.g. `{"image_token": "<image>"}`) follow the four
    special tokens, are never split or lower-cased, and become attributes (`tokenizer.image_token`):
    the image placeholders that a model family's processor expects.
    """
    extra = dict(extra_special_tokens or {})
    template_words = _words_of([format_prompt(""), format_prompt(None)])
    vocab_words = sorted((_words_of(words) | template_words) - set(SPECIAL_TOKENS) - set(extra.values()))
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *extra.values(), *vocab_words])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = _pre_tokenizer()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
        **({"extra_special_tokens": extra} if extra else {}),
    )


def load_tokenizer(spec: dict, words: Sequence[str] | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer named by a model spec's `tokenizer` entry.

    `{"wordlevel": true}` builds a word-level tokenizer from `words`; `{"id": ...}` loads a hub id
    or local directory. Tokenizers without a pad token (LLaMA/Vicuna) get `unk` as pad, as LLaVA does.
    """
    if spec.get("wordlevel"):
        if words is None:
            raise ValueError("tokenizer.wordlevel needs `words` to build its vocabulary")
        return build_wordlevel_tokenizer(words)
    if "id" not in spec:
        raise ValueError("tokenizer: expected either `id` (hub id or local path) or `wordlevel: true`")
    tokenizer = AutoTokenizer.from_pretrained(spec["id"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, question: str | None) -> list[int]:
    # Special tokens are added by hand so that the prompt/target boundary is exact for every tokenizer.
    ids = tokenizer(format_prompt(question), add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids


def encode_example(tokenizer: PreTrainedTokenizerBase, question: str | None, target: str) -> dict[str, list[int]]:
    """Token ids of prompt + target + eos, with labels -100 on the prompt (loss on target and eos only)."""
    prompt = _prompt_ids(tokenizer, question)
    answer = tokenizer(format_target(target), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


def _pad(rows: Sequence[Sequence[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(row) for row in rows)
    padded = [([value] * (width - len(row)) + list(row)) if left else (list(row) + [value] * (width - len(row))) for row in rows]
    return torch.tensor(padded, dtype=torch.long)


def collate_train(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `encode_example` outputs into `input_ids`, `attention_mask` and `labels` tensors."""
    ids = [example["input_ids"] for example in examples]
    return {
        "input_ids": _pad(ids, pad_id, left=False),
        "attention_mask": _pad([[1] * len(row) for row in ids], 0, left=False),
        "labels": _pad([example["labels"] for example in examples], IGNORE_INDEX, left=False),
    }


def encode_prompts(tokenizer: PreTrainedTokenizerBase, questions: Sequence[str | None]) -> dict[str, torch.Tensor]:
    """LEFT-padded prompt batch (`input_ids`, `attention_mask`) for generation."""
    ids = [_prompt_ids(tokenizer, question) for question in questions]
    return {
        "input_ids": _pad(ids, tokenizer.pad_token_id, left=True),
        "attention_mask": _pad([[1] * len(row) for row in ids], 0, left=True),
    }


def decode_answers(tokenizer: PreTrainedTokenizerBase, token_ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
    """Generated ids -> answers: cut at the first eos, drop special tokens, strip, lower-case."""
    answers = []
    for row in (token_ids.tolist() if isinstance(token_ids, torch.Tensor) else token_ids):
        row = list(row)
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        answers.append(tokenizer.decode(row, skip_special_tokens=True).strip().lower())
    return answers


def out_of_vocabulary(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[str]:
    """The words of ``texts`` that a word-level tokenizer would turn into `<unk>`, sorted.

    Empty for subword tokenizers (BPE, SentencePiece), which spell out any word. The words are
    those the tokenizer itself sees (its normalizer and pre-tokenizer), so "Red?" is "red" and "?".
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.model, WordLevel):
        return []
    vocabulary = tokenizer.get_vocab()
    normalize = backend.normalizer.normalize_str if backend.normalizer else (lambda text: text)
    words = {word for text in texts for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalize(text))}
    return sorted(word for word in words if word not in vocabulary)
