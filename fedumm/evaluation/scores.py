"""Scoring of generated answers: VQA accuracy, exact match, and prior baselines, and the scores of
every task of an evaluation split (`score_records`: VQA, exact match, classification, captioning
through ``fedumm.evaluation.captions``, grounding through ``fedumm.evaluation.grounding``), its primary score, and
the per-client (personalized) scores and their mean.

VQA accuracy follows the official VQA v2 evaluation script, ``vqaEval.py`` of GT-Vision-Lab/VQA,
in its current form (commit a013f0043c1e2cdc995922dfe257f7149aa9af06, the version after the fix of
the ground-truth processing):

    https://github.com/GT-Vision-Lab/VQA/blob/a013f0043c1e2cdc995922dfe257f7149aa9af06/PythonEvaluationTools/vqaEvaluation/vqaEval.py

It is a clean reimplementation; behaviour, including the script's quirks, is reproduced exactly:

* Whitespace: newlines and tabs become spaces and the ends are stripped, for the predicted answer
  and for every ground-truth answer.
* Normalization (``normalize_answer``) is punctuation processing followed by digit/article
  processing, and it is applied to the prediction *and* the ground-truth answers, but only when the
  ten (whitespace-cleaned) ground-truth answers are not all identical. When all annotators agree,
  neither side is normalized, so the prediction must equal the answer string exactly ("Yes" or
  "yes." scores 0 against ten "yes"); the maintainers' stated reason is to leave answers of
  text-reading (OCR) questions untouched (GT-Vision-Lab/VQA issue #14).
* Before the fix, the prediction was always fully normalized while the ground-truth answers only
  went through punctuation processing (and only when they disagreed), and ground-truth answers were
  not whitespace-cleaned; a ground truth such as "the cat" or "two" could then never be matched.
* Per question, accuracy is the mean over the ten leave-one-out subsets of nine answers of
  ``min(1, #matches in the subset / 3)``. The script drops the held-out answer by dict inequality,
  which removes exactly one entry because every VQA answer has a distinct ``answer_id``; here the
  held-out answer is dropped by position, which is the same on real annotations.
* Overall, per-answer-type and per-question-type accuracies are unweighted means of the
  per-question accuracies. They are returned as floats in [0, 1] at full precision, not as the
  script's percentages rounded to two decimals.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from statistics import fmean
from typing import Any

from fedumm.evaluation import captions, grounding
from fedumm.models import batches

# The script's contraction table. Keys with capitals ("Im", "Ive", "Id've", "I'dve") can never
# match because words are lower-cased first; they are kept so the table is the official one.
_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    # Upstream maps "somebody'd" to "somebodyd" (the reverse of its neighbours); kept as is.
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}

# Upstream "manualMap". "none" -> "0" is deliberate upstream (GT-Vision-Lab/VQA issue #7).
_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

_ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Upstream "punct", in its order; the period is handled separately and the apostrophe and colon
# are deliberately absent (so contractions and times survive).
_PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)

# Upstream "commaStrip": only used as a test; a number like "1,000" makes every punctuation mark
# be deleted rather than turned into a space.
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")

# Upstream "periodStrip" is "(?!<=\d)(\.)(?!\d)". Its "(?!<=\d)" is a mistyped look-behind that
# is a look-ahead for the literal "<=" and a digit, which can never match where a "." stands, so
# the pattern is exactly "a period not followed by a digit" ("3.5" keeps its period).
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

# Upstream calls periodStrip.sub("", text, re.UNICODE): the flag lands in the positional `count`
# argument, so at most re.UNICODE == 32 periods are removed.
_MAX_PERIODS_REMOVED = int(re.UNICODE)


def _clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, ends stripped (applied upstream to every answer first)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    """Upstream ``processPunctuation``: remove or space out punctuation, then strip periods.

    A mark is deleted if it touches a space somewhere in the text or if the text contains a
    digit-comma-digit group; otherwise every occurrence becomes a space. Both tests look at the
    input text, not the partly processed one, as upstream does.
    """
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_REMOVED)


def _process_digits_articles(text: str) -> str:
    """Upstream ``processDigitArticle``: lower-case, split on whitespace, number words to digits,
    drop articles, expand apostrophe-less contractions, re-join with single spaces."""
    words = (_NUMBER_WORDS.get(word, word) for word in text.lower().split())
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def normalize_answer(a: str) -> str:
    """The official VQA normalization of one answer (whitespace, punctuation, digits/articles).

    Examples: "Two" -> "2", "a red car." -> "red car", "isnt" -> "isn't", "x,y" -> "x y",
    "1,000" -> "1000", "3.5" -> "3.5". `vqa_question_accuracy` applies it only when the
    ground-truth answers disagree, as the official script does.
    """
    return _process_digits_articles(_process_punctuation(_clean_whitespace(a)))


def vqa_question_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """Official VQA accuracy of one predicted answer against its (ten) human answers, in [0, 1].

    Both sides are whitespace-cleaned; if the cleaned human answers are not all identical, both
    sides are also normalized with `normalize_answer`, otherwise they are compared verbatim. The
    score is the mean over leave-one-out subsets of min(1, matches among the others / 3).
    """
    if not gt_answers:
        raise ValueError("a question needs at least one ground-truth answer")
    gts = [_clean_whitespace(answer) for answer in gt_answers]
    pred = _clean_whitespace(prediction)
    if len(set(gts)) > 1:
        gts = [normalize_answer(answer) for answer in gts]
        pred = normalize_answer(pred)
    matches = sum(answer == pred for answer in gts)
    # Leaving out answer i removes one match exactly when answer i itself matches.
    return fmean(min(1.0, (matches - (answer == pred)) / 3) for answer in gts)


def _group_means(scores: Sequence[float], keys: Sequence[Hashable]) -> dict[Any, float]:
    """Mean score per key, keys in sorted order (for stable JSON output)."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for score, key in zip(scores, keys, strict=True):
        groups[key].append(score)
    return {key: fmean(groups[key]) for key in sorted(groups)}


def score_vqa(predictions: dict[str, str], records: list[dict]) -> dict:
    """Official VQA accuracy of `predictions` (keyed by record "id") on `records`.

    Each record has "id", "answers" (the human answers as dicts with an "answer" key),
    "answer_type" and "question_type". A record without a prediction scores 0 and is counted in
    "missing"; predictions for ids not among the records are ignored. Returns
    {"accuracy", "per_answer_type", "per_question_type", "n", "missing"}, accuracies being
    unweighted means of per-question accuracies as floats in [0, 1].
    """
    if not records:
        raise ValueError("no records to score")
    scores = [
        vqa_question_accuracy(predictions[r["id"]], [a["answer"] for a in r["answers"]])
        if r["id"] in predictions
        else 0.0
        for r in records
    ]
    return {
        "accuracy": fmean(scores),
        "per_answer_type": _group_means(scores, [r["answer_type"] for r in records]),
        "per_question_type": _group_means(scores, [r["question_type"] for r in records]),
        "n": len(records),
        "missing": sum(r["id"] not in predictions for r in records),
    }


def exact_match_accuracy(predictions: dict[str, str], references: dict[str, str]) -> float:
    """Fraction of references whose prediction equals them after `normalize_answer` on both sides.

    GQA-style single-answer exact match (GQA's own script compares raw strings; normalizing both
    sides only forgives case, articles, punctuation and number words). A missing prediction is
    wrong; predictions without a reference are ignored.
    """
    if not references:
        raise ValueError("no references to score")
    return fmean(
        key in predictions and normalize_answer(predictions[key]) == normalize_answer(ref)
        for key, ref in references.items()
    )


def classification_accuracy(predictions: dict[str, str], references: dict[str, str]) -> float:
    """Accuracy of generated class labels: exactly `exact_match_accuracy` (normalized match).

    A separate name so that reports state which task a number comes from.
    """
    return exact_match_accuracy(predictions, references)


def _most_frequent(answers: Iterable[str]) -> str:
    """The most frequent answer; ties go to the lexicographically smallest, so the result does
    not depend on record order."""
    counts = Counter(answers)
    if not counts:
        raise ValueError("no training answers")
    return min(counts, key=lambda answer: (-counts[answer], answer))


def majority_answer(train_records: Iterable[Mapping]) -> str:
    """The most frequent "multiple_choice_answer" of the training records."""
    return _most_frequent(r["multiple_choice_answer"] for r in train_records)


def majority_baseline(train_records: list[dict], test_records: list[dict]) -> float:
    """VQA accuracy on `test_records` of always answering the most frequent training
    "multiple_choice_answer" (the "prior" baseline of Antol et al., 2015, which is "yes" on VQA)."""
    answer = majority_answer(train_records)
    return score_vqa({r["id"]: answer for r in test_records}, test_records)["accuracy"]


def per_question_type_majority_baseline(
    train_records: list[dict], test_records: list[dict]
) -> float:
    """VQA accuracy on `test_records` of answering, for each question type, the most frequent
    training "multiple_choice_answer" of that type (the "per Q-type prior" of Antol et al., 2015).

    Question types absent from training fall back to the overall majority answer.
    """
    return score_vqa(_type_prior_answers(train_records, test_records), test_records)["accuracy"]


def _type_prior_answers(train_records: list[dict], test_records: list[dict]) -> dict[str, str]:
    """Each test record's answer under the per question-type prior: its type's most frequent training
    answer (the overall one for a type absent from training)."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for r in train_records:
        by_type[r["question_type"]].append(r["multiple_choice_answer"])
    type_answer = {qtype: _most_frequent(answers) for qtype, answers in by_type.items()}
    fallback = majority_answer(train_records)
    return {r["id"]: type_answer.get(r["question_type"], fallback) for r in test_records}


def chance_by_question_type(train_records: Sequence[Mapping], records: Sequence[Mapping]) -> dict:
    """What a model gets on each question type without looking at the image: VQA accuracy per
    question type of the per question-type prior (`per_question_type_majority_baseline`) on the
    ``vqa`` records with several human answers, and the accuracy of always giving the most frequent
    training label on ``classify`` records (None without them). A type's accuracy at or below its
    chance means the model has not learnt that type."""
    vqa_train = [r for r in train_records if metric_group(r) == "vqa"]
    vqa_test = [r for r in records if metric_group(r) == "vqa"]
    per_type = score_vqa(_type_prior_answers(vqa_train, vqa_test), vqa_test)["per_question_type"] if vqa_test else {}
    classify_train = [r for r in train_records if batches.record_task(r) == "classify"]
    labels = {r["id"]: _field(r, "label") for r in records if batches.record_task(r) == "classify"}
    classification = None
    if classify_train and labels:
        label = _most_frequent(_field(r, "label") for r in classify_train)
        classification = classification_accuracy({i: label for i in labels}, labels)
    return {"per_question_type": per_type, "classification_accuracy": classification}


# ---------------------------------------------------------------- scoring every task of a split

_ANSWER_TASKS: frozenset[str] = frozenset({"vqa", "classify"})
"""Tasks with a short textual answer; their training answers make the majority baseline."""

PRIMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("vqa", "vqa.accuracy"),
    ("exact_match", "exact_match.accuracy"),
    ("classify", "classification_accuracy"),
    ("caption", "caption.CIDEr"),
    ("ground", "ground.accuracy@0.5"),
)
"""(metric group, score path) in priority order: a split's primary score is that of the first
group it has records of (`primary_metric`)."""


def has_annotator_answers(record: Mapping) -> bool:
    """Whether a VQA record has several human answers (VQA v2 style).

    The VQA soft accuracy is a leave-one-out over the human answers: with a single answer every
    prediction scores 0, so single-answer sets (GQA style) are scored by exact match instead.
    """
    return len(record.get("answers", ())) >= 2


def metric_group(record: Mapping) -> str:
    """The metric a record is scored by: ``vqa`` (VQA accuracy), ``exact_match`` (single-answer
    VQA), ``classify``, ``caption`` or ``ground``."""
    task = batches.record_task(record)
    if task == "vqa" and not has_annotator_answers(record):
        return "exact_match"
    return task


def _field(record: Mapping, key: str) -> Any:
    """``record[key]``; a missing one is an error naming the record and its task."""
    if key not in record:
        raise ValueError(f"record {record.get('id')!r} (task {record.get('task')!r}) has no {key!r} to score against")
    return record[key]


def primary_metric(records: Sequence[Mapping]) -> str:
    """The path in the scores of the split's primary score (`PRIMARY_METRICS`): VQA accuracy when
    the split has VQA v2 style records, else exact match, classification accuracy, CIDEr, and
    grounding accuracy at IoU >= 0.5, the first whose task is present."""
    groups = {metric_group(record) for record in records}
    for group, path in PRIMARY_METRICS:
        if group in groups:
            return path
    raise ValueError("no records to score")


def metric_value(scores: Mapping, path: str) -> float | None:
    """The value at ``path`` ("block.key" or a top-level key) of `score_records`' output; None
    when that block is absent (no records of its task)."""
    block, _, key = path.partition(".")
    value = scores[block]
    return value[key] if key and value is not None else value


def score_records(
    predictions: Mapping[str, str],
    records: Sequence[Mapping],
    sizes: Mapping[str, tuple[int, int]],
    spice: bool = False,
    metric: str | None = None,
) -> dict:
    """Scores of ``predictions`` (answer text by record id) on ``records``, each by its task.

    * ``vqa``: official VQA v2 accuracy (`score_vqa`) over records with several human answers;
    * ``exact_match``: GQA-style exact match (`exact_match_accuracy`) of single-answer VQA
      records against ``multiple_choice_answer``, as ``{"accuracy", "n"}``;
    * ``classification_accuracy``: `classification_accuracy` of ``classify`` records against
      their ``label``;
    * ``caption``: pycocoevalcap's BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE with ``spice``)
      of ``caption`` records against their references (``fedumm.evaluation.captions``), plus ``n``;
    * ``ground``: mean IoU, accuracy at IoU >= 0.5 and the count of malformed answers (which
      score IoU 0) of ``ground`` records against their ``box`` (``fedumm.evaluation.grounding``); ``sizes``
      gives their images' (width, height).

    A block is None when ``records`` has none of its task. ``score`` is the value at ``metric``
    (default `primary_metric` of ``records``; None when that block is absent), named in
    ``score_metric``; ``n`` counts all records and ``n_per_task`` each task's. Every record
    needs a prediction: the evaluation generates one per record.
    """
    missing = [r["id"] for r in records if r["id"] not in predictions]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} record(s), e.g. {missing[0]!r}")
    groups: dict[str, list[Mapping]] = defaultdict(list)
    for record in records:
        groups[metric_group(record)].append(record)

    def predicted(group: str) -> dict[str, str]:
        return {r["id"]: predictions[r["id"]] for r in groups[group]}

    exact = {r["id"]: _field(r, "multiple_choice_answer") for r in groups["exact_match"]}
    labels = {r["id"]: _field(r, "label") for r in groups["classify"]}
    references = {r["id"]: batches.caption_references(r) for r in groups["caption"]}
    boxes = {r["id"]: _field(r, "box") for r in groups["ground"]}
    scores: dict[str, Any] = {
        "vqa": score_vqa(predictions, groups["vqa"]) if groups["vqa"] else None,
        "exact_match": (
            {"accuracy": exact_match_accuracy(predicted("exact_match"), exact), "n": len(exact)} if exact else None
        ),
        "classification_accuracy": classification_accuracy(predicted("classify"), labels) if labels else None,
        "caption": (
            {**captions.caption_scores(predicted("caption"), references, spice=spice), "n": len(references)}
            if references
            else None
        ),
        "ground": grounding.grounding_scores(predicted("ground"), boxes, sizes) if boxes else None,
        "n": len(records),
        "n_per_task": dict(sorted(Counter(batches.record_task(r) for r in records).items())),
    }
    metric = metric or primary_metric(records)
    return {**scores, "score": metric_value(scores, metric), "score_metric": metric}


def mean_scores(scores: Sequence[Mapping]) -> dict:
    """Unweighted mean over models or clients of every number in their `score_records` outputs.

    Nested blocks are averaged key by key over the union of their keys; a value that an entry
    lacks (None, or a key it does not have, e.g. a question type absent from a client's split)
    is left out of that key's mean, which is None when no entry has it. Strings (the score's
    name) must agree. Counts are averaged like scores.
    """

    def mean(values: list) -> Any:
        present = [value for value in values if value is not None]
        if not present:
            return None
        if all(isinstance(value, Mapping) for value in present):
            keys = dict.fromkeys(key for value in present for key in value)
            return {key: mean([value.get(key) for value in present]) for key in keys}
        if all(isinstance(value, str) for value in present):
            if len(set(present)) > 1:
                raise ValueError(f"cannot average different names {sorted(set(present))}")
            return present[0]
        # sum / len rather than fmean: the local baseline's means of earlier runs, bit for bit.
        return sum(present) / len(present)

    if not scores:
        raise ValueError("no scores to average")
    return mean(list(scores))


def personalized_scores(
    predictions: Mapping[str, Mapping[str, str]],
    records: Sequence[Mapping],
    client_ids: Mapping[str, Sequence[str]],
    sizes: Mapping[str, tuple[int, int]],
    spice: bool,
    metric: str,
) -> dict:
    """Each client's model scored on the client's own split, and the mean over clients.

    The personalized evaluation of Fed-CMP (App. B) and FedVLMBench: ``client_ids`` maps a client
    name to the ids of its evaluation split (a subset of ``records``); ``predictions`` maps model
    names to their answers on ``records``. A client is scored with the predictions of the model
    of its own name (the local baseline) or, when there is a single model, with those of that
    one (the global model). Each client is scored by `score_records` with the split's ``metric``;
    ``mean`` is `mean_scores` over clients (a client without records of a task does not count in
    that task's mean). Returns ``{"model": "global" | "local", "clients", "mean"}``.
    """
    if not client_ids:
        raise ValueError("no clients to score")
    by_id = {record["id"]: record for record in records}
    clients = {}
    for client, ids in client_ids.items():
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ValueError(f"{client}: {len(unknown)} sample(s) not in the evaluated split, e.g. {unknown[0]!r}")
        if client in predictions:
            model_predictions = predictions[client]
        elif len(predictions) == 1:
            model_predictions = next(iter(predictions.values()))
        else:
            raise ValueError(f"no model for {client}: the models are {sorted(predictions)}")
        clients[client] = score_records(model_predictions, [by_id[i] for i in ids], sizes, spice, metric)
    return {
        "model": "global" if len(predictions) == 1 else "local",
        "clients": clients,
        "mean": mean_scores(list(clients.values())),
    }


def majority_baseline_for(metric: str, train_records: Sequence[Mapping], records: Sequence[Mapping]) -> float | None:
    """The primary score of always giving the most frequent training answer (of ``vqa`` and
    ``classify`` records): `majority_baseline` for VQA accuracy, exact match for single-answer
    sets; None for the other metrics (captions and boxes have no majority answer)."""
    answer_records = [r for r in train_records if batches.record_task(r) in _ANSWER_TASKS]
    if metric == "vqa.accuracy":
        return majority_baseline(answer_records, [r for r in records if metric_group(r) == "vqa"])
    if metric == "exact_match.accuracy":
        answer = majority_answer(answer_records)
        references = {r["id"]: r["multiple_choice_answer"] for r in records if metric_group(r) == "exact_match"}
        return exact_match_accuracy({i: answer for i in references}, references)
    return None
