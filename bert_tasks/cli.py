"""bert-tasks train | evaluate | predict | compare | suite | publish | inspect | recipes | report | cache.

Errors in the user's input print as one line on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import BertTasksError, DataError
from .precision import PRECISIONS


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .summary import format_table
    from .training import train

    summary = train(load_config(args.recipe, args.overrides))
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_table([summary]))
        print(f"run directory: {summary.run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_run

    overrides = tuple(args.overrides) + ((f"train.mixed_precision={args.precision}",) if args.precision else ())
    results, table = evaluate_run(Path(args.run_dir), overrides, args.split, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(results, indent=2))
        if table:
            print(table)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predictor import check_batch_size, check_prediction_paths, load

    check_batch_size(args.batch_size)  # the cheap checks first: before any weights load
    check_prediction_paths(Path(args.input), Path(args.output))
    if Path(args.output).exists() and not args.overwrite:  # a file we cannot tell is ours is never replaced unasked
        raise DataError(f"--output={args.output!r}: the file exists; give another name, or --overwrite to replace it")
    columns = {key: value for key, value in (("text_column", args.text_column), ("text_pair_column", args.text_pair_column)) if value}
    predictor = load(args.run_dir, device=args.device, precision=args.precision)  # config, tokenizer and task; the weights load once the input is checked
    count = predictor.predict_file_to(Path(args.input), Path(args.output), args.batch_size, columns)
    print(f"{count} predictions written to {args.output}")
    return 0


def _cmd_suite(args: argparse.Namespace) -> int:
    from .suite import run

    run(args.suite, args.overrides)
    return 0


def _cmd_launch_config(args: argparse.Namespace) -> int:
    from .launch_configs import config_path, names

    if args.name is None:
        print("\n".join(names()))
    else:
        print(config_path(args.name))
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .config import list_recipes, recipes_dir

    root = recipes_dir()
    for path in list_recipes():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        print(f"{str(path.relative_to(root).with_suffix('')):<16} {first}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .summary import RunSummary, format_table

    print(format_table([RunSummary.load(Path(d)) for d in args.run_dirs]))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .comparison import compare

    compare(args.recipe, args.overrides)
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .publishing import publish

    export = publish(Path(args.run_dir), Path(args.out), license=args.license, push=args.push, private=args.private)
    print(f"published {args.run_dir} -> {export.folder} ({export.format} format: {export.reason})")
    if args.push:
        print(f"pushed to https://huggingface.co/{args.push}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .parameters import format_report, parameter_report
    from .rundir import load_trained, weights_size

    config, assembly = load_trained(Path(args.run_dir))
    print(f"task {config.task.name}, strategy {assembly.strategy.describe()}, checkpoint {config.model.checkpoint}")
    print(format_report(parameter_report(assembly.model)))
    print(f"best checkpoint on disk: {weights_size(Path(args.run_dir)) / 1e6:.2f} MB")
    for key, value in assembly.strategy.inspect(assembly.model).items():
        if isinstance(value, dict):
            print(f"{key}:")
            for name, number in value.items():
                print(f"  {name:<12}{number:>8.4f}  {'#' * round(40 * number)}")
        else:
            print(f"{key}: {value}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from . import arrow_inventory
    from .frozen.inventory import cache_root, clear, describe

    root = cache_root(args.dir)
    data_root = Path(args.data_dir).expanduser() if args.data_dir else arrow_inventory.store_root(None)
    if args.clear:
        freed = clear(root)
        print(f"removed the frozen stores in {root}: {freed / 2**20:,.1f} MB freed")
        freed = arrow_inventory.clear(data_root)
        print(f"removed the training-data stores in {data_root}: {freed / 2**20:,.1f} MB freed")
    else:
        print(describe(root))
        print(arrow_inventory.describe(data_root))
    return 0


DEVICE_HELP = "auto (a GPU when there is one), cpu, cuda, cuda:N or mps"
PRECISION_HELP = "no (fp32), bf16, fp16, or auto: bf16 / fp16 where the device runs it natively, else fp32"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert-tasks", description="Fine-tune BERT-style encoders from YAML recipes.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a recipe: bert-tasks train RECIPE [section.key=value ...]")
    train.add_argument("recipe", help="a YAML file, or a recipe name such as glue/sst2 (see `bert-tasks recipes`)")
    train.add_argument("overrides", nargs="*", help="typed overrides, e.g. train.learning_rate=3e-5 strategy.name=last_n")
    train.set_defaults(run=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics of a run's best model: bert-tasks evaluate RUN_DIR [data.key=value ...]")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("overrides", nargs="*", help="data overrides, e.g. data.validation=dev.tsv")
    evaluate.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    evaluate.add_argument("--device", default="auto", help=DEVICE_HELP)
    evaluate.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP + " (default: the run's train.mixed_precision)")
    evaluate.set_defaults(run=_cmd_evaluate)

    predict = commands.add_parser("predict", help="predict a file: bert-tasks predict RUN_DIR --input FILE --output FILE.jsonl")
    predict.add_argument("run_dir")
    predict.add_argument("--input", required=True, help="csv / tsv / json / jsonl / parquet / CoNLL with the run's input columns (or 'text', 'text_pair')")
    predict.add_argument("--output", required=True, help="one JSON object per input row (label and scores, tags, ...); CoNLL input gives CoNLL output with a predicted column")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--overwrite", action="store_true", help="replace --output if it exists (without it, an existing file is refused)")
    predict.add_argument("--device", default="auto", help=DEVICE_HELP)
    predict.add_argument("--precision", choices=PRECISIONS, default="no", help=PRECISION_HELP + " (default: no, exact)")
    predict.add_argument("--text-column", metavar="NAME", help="the input's column for the run's data.text_column (the text, tokens, question or source), when the input names it differently")
    predict.add_argument("--text-pair-column", metavar="NAME", help="the input's column for the run's data.text_pair_column (the second text, or the context)")
    predict.set_defaults(run=_cmd_predict)

    compare = commands.add_parser("compare", help="strategies side by side over learning rates and seeds: bert-tasks compare RECIPE [key=value ...]")
    compare.add_argument("recipe", help="a comparison recipe (a training recipe with a 'compare' section), e.g. compare/demo")
    compare.add_argument("overrides", nargs="*", help="overrides of the recipe or of compare.*, e.g. compare.seeds=[1] train.epochs=1")
    compare.set_defaults(run=_cmd_compare)

    publish = commands.add_parser("publish", help="a Hub-ready folder (weights, tokenizer, model card): bert-tasks publish RUN_DIR --out DIR [--push REPO_ID]")
    publish.add_argument("run_dir")
    publish.add_argument("--out", required=True, help="a new (or empty) folder")
    publish.add_argument("--license", default="apache-2.0", help="the card's license (the default checkpoint is apache-2.0; mind your data's terms)")
    publish.add_argument("--push", metavar="REPO_ID", help="also upload to this Hub repository with your token (HF_TOKEN or huggingface-cli login)")
    publish.add_argument("--private", action="store_true", help="with --push: create the repository as private")
    publish.set_defaults(run=_cmd_publish)

    recipes = commands.add_parser("recipes", help="list the bundled recipes")
    recipes.set_defaults(run=_cmd_recipes)

    inspect = commands.add_parser("inspect", help="parameters by group and learned values (e.g. layer weights) of a run")
    inspect.add_argument("run_dir")
    inspect.set_defaults(run=_cmd_inspect)

    suite = commands.add_parser("suite", help="a benchmark's tasks, table and submission files: bert-tasks suite glue [key=value ...]")
    suite.add_argument("suite", help="a bundled suite (glue) or a suite recipe file")
    suite.add_argument("overrides", nargs="*", help="suite.* options and recipe keys for every task, e.g. suite.data_dir=DIR suite.max_train_samples=2000 train.epochs=1")
    suite.set_defaults(run=_cmd_suite)

    launch = commands.add_parser("launch-config", help="the path of a bundled Accelerate config: accelerate launch --config_file $(bert-tasks launch-config ddp) -m bert_tasks train RECIPE")
    launch.add_argument("name", nargs="?", help="ddp, ddp_cpu, fsdp_full_shard, fsdp_shard_grad_op, deepspeed_zero2, deepspeed_zero3 (none: list them)")
    launch.set_defaults(run=_cmd_launch_config)

    report = commands.add_parser("report", help="a table of finished runs: bert-tasks report RUN_DIR [RUN_DIR ...]")
    report.add_argument("run_dirs", nargs="+")
    report.set_defaults(run=_cmd_report)

    cache = commands.add_parser("cache", help="the stored outputs of frozen encoder parts (train.cache_frozen) and training-data stores (data.storage=arrow): list them, or --clear")
    cache.add_argument("--dir", help="the store folder (default: $BERT_TASKS_CACHE, else ~/.cache/bert_tasks/frozen)")
    cache.add_argument("--data-dir", help="the training-data stores (data.cache_dir; default: $BERT_TASKS_CACHE/encoded, else ~/.cache/bert_tasks/encoded)")
    cache.add_argument("--clear", action="store_true", help="remove every store (and dead builds' leftovers) in it")
    cache.set_defaults(run=_cmd_cache)
    return parser


# Commands that never load a model, so they answer without importing transformers (seconds).
_LIGHT_COMMANDS = {"recipes", "report", "cache", "launch-config"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in _LIGHT_COMMANDS:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # 'Loading weights' bars: noise beside our own progress bar
    try:
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return status
    except BertTasksError as error:
        print(f"bert-tasks: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `bert-tasks recipes | head`: the reader left; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 141
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as error:
        if error.filename is None:
            raise
        print(f"bert-tasks: error: {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bert-tasks: interrupted (resume with train.resume=true)", file=sys.stderr)
        return 130
