"""Caption metrics of the COCO caption evaluation, computed by pycocoevalcap.

``caption_scores`` runs the sequence of pycocoevalcap's ``COCOEvalCap.evaluate`` (pycocoevalcap
1.2, ``pycocoevalcap/eval.py``) on plain dicts instead of COCO annotation files:

1. the predictions and the references are tokenized separately with
   ``PTBTokenizer().tokenize`` (Stanford CoreNLP 3.4.1's PTB tokenizer, lower-cased, with the
   punctuation tokens removed);
2. ``Bleu(4)``, ``Meteor()``, ``Rouge()``, ``Cider()`` and, when asked, ``Spice()`` each score the
   tokenized predictions against the tokenized references of the same ids, and the corpus-level
   score of each is reported.

Scores are pycocoevalcap's, unscaled: BLEU, METEOR, ROUGE-L and SPICE lie in [0, 1]; CIDEr (the
CIDEr-D variant that pycocoevalcap implements: 10x a clipped, length-penalized TF-IDF n-gram
cosine) lies in [0, 10] and is usually reported x100 in papers.

Two deliberate differences from running ``COCOEvalCap``:

* Every caption is made one line before tokenizing (each line break that ``str.splitlines``
  knows becomes a space). pycocoevalcap replaces only ``"\\n"``, but the Java tokenizer also
  ends lines at ``"\\r"``, ``"\\v"``, ``"\\f"``, U+2028 and U+2029; a generated caption
  containing one of them would silently shift every later caption onto the wrong image.
  Other captions tokenize exactly as upstream.
* The METEOR scorer, a Java process that takes ~20 s to load its paraphrase tables, is started
  once per Python process and reused by later calls (it scores each call independently).

Java is required (the tokenizer and METEOR are Java programs). SPICE also needs Java 8-11 and
the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads from nlp.stanford.edu into its
``spice/lib`` folder on first use; both are checked before anything runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import get_stanford_models
from pycocoevalcap.spice.spice import Spice
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

JAVA_INSTALL_HINT = (
    "install a Java runtime: `make system-deps`, or `apt-get install default-jre-headless`"
)
# SPICE 1.0 was built for Java 8; 8 and 11 are known to work, while Java 16+ refuses its
# reflective access (InaccessibleObjectException; tylin/coco-caption#59, Labbeti/aac-metrics#1).
SPICE_JAVA_VERSIONS = range(8, 12)

_meteor_scorer: Meteor | None = None


def caption_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    spice: bool = False,
) -> dict[str, float]:
    """Corpus-level COCO caption metrics of ``predictions`` against ``references``.

    ``predictions`` maps an image id to its one generated caption, ``references`` the same ids
    to their reference captions. Returns ``"BLEU-1"`` .. ``"BLEU-4"``, ``"METEOR"``,
    ``"ROUGE-L"``, ``"CIDEr"`` and, when ``spice`` is true, ``"SPICE"``, as computed by
    pycocoevalcap (module docstring). An empty prediction is scored as such (zero overlap).

    Raises ValueError when there is nothing to score, when an id has no reference, or when the
    ids of ``predictions`` and ``references`` differ (the COCO evaluation requires exactly one
    caption per evaluated image); RuntimeError when Java, or what SPICE needs, is missing.
    """
    _check_ids(predictions, references)
    require_java()
    if spice:
        require_spice()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(
        {i: [{"caption": _one_line(c)} for c in references[i]] for i in references}
    )
    res = tokenizer.tokenize({i: [{"caption": _one_line(predictions[i])}] for i in references})
    # verbose=0 only silences the printout of BLEU's n-gram counts.
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n}": float(score) for n, score in enumerate(bleu, start=1)}
    scores["METEOR"] = float(_meteor().compute_score(gts, res)[0])
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if spice:
        # require_spice() checked the jars, so the constructor downloads nothing.
        scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
    return scores


def _check_ids(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> None:
    """Raise ValueError unless every id has one prediction and at least one reference."""
    if not references:
        raise ValueError("no reference captions to score against")
    missing = sorted(set(references) - set(predictions))
    if missing:
        raise ValueError(f"no predicted caption for image ids {missing}")
    extra = sorted(set(predictions) - set(references))
    if extra:
        raise ValueError(f"no reference captions for predicted image ids {extra}")
    unreferenced = sorted(i for i, refs in references.items() if not refs)
    if unreferenced:
        raise ValueError(f"empty reference list for image ids {unreferenced}")


def _one_line(caption: str) -> str:
    """``caption`` with every line break (``str.splitlines``) replaced by a space."""
    return " ".join(caption.splitlines())


def require_java() -> None:
    """Raise RuntimeError unless a ``java`` executable is on ``PATH``."""
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption metrics need Java (pycocoevalcap's PTB tokenizer and METEOR are Java "
            f"programs) but `java` is not on PATH; {JAVA_INSTALL_HINT}"
        )


def require_spice() -> None:
    """Raise RuntimeError, naming every unmet requirement, unless SPICE can run here."""
    problems = spice_problems(_java_version_output(), spice_lib_dir())
    if problems:
        raise RuntimeError("SPICE cannot run: " + "; ".join(problems))


def spice_problems(java_version_output: str, lib_dir: Path) -> list[str]:
    """What keeps SPICE from running, given ``java -version``'s output and SPICE's lib folder.

    SPICE needs a Java major version in ``SPICE_JAVA_VERSIONS`` and the Stanford CoreNLP jars
    that pycocoevalcap's ``get_stanford_models`` would otherwise download (internet access) on
    first use. Returns one sentence per unmet requirement; empty when all are met.
    """
    problems = []
    major = java_major_version(java_version_output)
    if major not in SPICE_JAVA_VERSIONS:
        found = f"Java {major}" if major is not None else "no recognizable Java version"
        problems.append(
            f"it needs Java {SPICE_JAVA_VERSIONS[0]}-{SPICE_JAVA_VERSIONS[-1]} "
            f"(SPICE 1.0 fails on other versions) but `java -version` reports {found}"
        )
    jar = get_stanford_models.JAR
    jars = (f"{jar}.jar", f"{jar}-models.jar")
    absent = [name for name in jars if not (lib_dir / name).is_file()]
    if absent:
        problems.append(
            f"the Stanford CoreNLP jars {absent} are not in {lib_dir}; pycocoevalcap downloads "
            "them from nlp.stanford.edu on first use, which needs internet access (run "
            "`python -m pycocoevalcap.spice.get_stanford_models` once where there is)"
        )
    return problems


def java_major_version(java_version_output: str) -> int | None:
    """The Java major version in ``java -version``'s output, or ``None`` if there is none.

    Old runtimes report ``version "1.8.0_392"`` (major 8), newer ones ``version "17.0.15"``.
    """
    match = re.search(r'version "(\d+)(?:\.(\d+))?', java_version_output)
    if match is None:
        return None
    first, second = match.groups()
    return int(second) if first == "1" and second is not None else int(first)


def spice_lib_dir() -> Path:
    """The folder in which pycocoevalcap's SPICE expects the Stanford CoreNLP jars."""
    return Path(get_stanford_models.SPICEDIR).resolve() / get_stanford_models.SPICELIB


def _java_version_output() -> str:
    """What ``java -version`` prints (it writes to stderr)."""
    done = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return done.stderr + done.stdout


def _meteor() -> Meteor:
    """This process's METEOR scorer, started on first use and again if its JVM has exited."""
    global _meteor_scorer
    # meteor_p is pycocoevalcap's handle on the JVM; a dead one would fail every later call.
    if _meteor_scorer is None or _meteor_scorer.meteor_p.poll() is not None:
        _meteor_scorer = Meteor()
    return _meteor_scorer
