"""The ``fedumm`` command: using what a run produced, outside the workflow.

    fedumm predict --base results/models/tiny/base --adapter results/fedavg/round_003/global \\
        --image cat.png --question "what colour is the shape ?"
    fedumm export --base results/models/tiny/base --adapter results/fedavg/round_003/global --out merged/
    fedumm bench ...          (= python -m fedumm.bench)
    fedumm accounting ...     (= python -m fedumm.reports.accounting)

Heavy imports (torch, transformers) happen inside the subcommands, so ``fedumm --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _predict(args: argparse.Namespace) -> int:
    from fedumm.evaluation import predict

    try:
        questions = predict.pair_questions(args.image, args.question)
        answers = predict.predict(args.base, args.adapter, questions, device=args.device,
                                  batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    except predict.PredictError as error:
        print(f"fedumm predict: {error}", file=sys.stderr)
        return 2
    for question, answer in zip(questions, answers):
        if args.json:
            print(json.dumps({"image": str(question.image), "question": question.question, "answer": answer}))
        else:
            print(f"{question.image}\t{question.question}\t{answer}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fedumm.models import families
    from fedumm.models.adapters import load_adapter

    if args.out.exists():
        print(f"fedumm export: {args.out} exists; give a new directory", file=sys.stderr)
        return 2
    base = families.load_base(args.base)
    merged = load_adapter(base.model, args.adapter, is_trainable=False).merge_and_unload()
    how = base.family.export(base, merged, args.out)
    print(f"wrote {args.out}; load it with {how}")
    return 0


# Subcommands that are the package's other command-line modules, given the rest of the line as is.
DELEGATED = {"bench": ("fedumm.bench", "the benchmarks of `make bench`"),
             "accounting": ("fedumm.reports.accounting", "parameters and bytes of real backbones")}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fedumm", description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="{predict,export,bench,accounting}")

    predict = commands.add_parser("predict", help="answer questions about your own images with a trained adapter",
                                  description="Greedy answers of the base model with an adapter to questions about "
                                              "images. Images and questions pair in order; one image takes every "
                                              "question, one question goes to every image.")
    predict.add_argument("--base", type=Path, required=True, help="base model directory (results/models/{model}/base)")
    predict.add_argument("--adapter", type=Path, help="adapter directory (results/{exp}/round_{r}/global); none: the base model")
    predict.add_argument("--image", type=Path, action="append", required=True, help="an image file (repeatable)")
    predict.add_argument("--question", action="append", required=True, help="a question (repeatable)")
    predict.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (default: cpu)")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.add_argument("--max-new-tokens", type=int, default=8)
    predict.add_argument("--json", action="store_true", help="one JSON object per answer instead of tab-separated lines")
    predict.set_defaults(run=_predict)

    export = commands.add_parser("export", help="merge an adapter into a standalone model directory",
                                 description="The base model with the adapter's LoRA merged into its weights and its "
                                             "trained copies (connector, ...) swapped in. A transformers family "
                                             "(family: hf) loads with plain transformers; the LLaVA recipe with fedumm.")
    export.add_argument("--base", type=Path, required=True, help="base model directory")
    export.add_argument("--adapter", type=Path, required=True, help="adapter directory")
    export.add_argument("--out", type=Path, required=True, help="new directory to write")
    export.set_defaults(run=_export)

    for name, (module, text) in DELEGATED.items():
        commands.add_parser(name, help=f"{text} (python -m {module}; `fedumm {name} --help`)", add_help=False)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        from importlib import import_module

        import_module(DELEGATED[argv[0]][0]).main(argv[1:])
        return 0
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
