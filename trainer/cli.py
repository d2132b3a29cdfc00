"""The `reasonrec` command: one entry point that dispatches to every supported job.

    reasonrec data --dataset ml-1m                 # load a dataset and print its size
    reasonrec index --dataset ml-100k              # encode its catalog into a FAISS index (resumable)
    reasonrec serve                                # build what is missing, then serve on 127.0.0.1:8000
    reasonrec train-sasrec --dataset ml-1m         # the SASRec+ production ranker (resumable)
    reasonrec train-table --dataset ml-1m          # the served ranker: item table, encoder, heads (resumable)
    reasonrec fit-cold-slots --table DIR           # a finished table's gate for new items (train-table fits it)
    reasonrec train-cl --dataset ml-1m             # contrastive LoRA on the language model (resumable)
    reasonrec train-rating --dataset ml-1m         # the rating model /rate serves (resumable)
    reasonrec eval-rating --dataset ml-1m          # the rating report: baselines, MF, the served model, ablations
    reasonrec train-reasoning --dataset ml-1m      # reasoning SFT on program-written rationales (resumable)
    reasonrec train-judge --dataset ml-100k        # the model as the user: A/B preference SFT (resumable)
    reasonrec eval-reasoning --adapter DIR         # marker rate, faithfulness, next-genre match of the reasoning
    reasonrec train-conclusion --adapter DIR       # the reasoning's conclusion as a score term (validation)
    reasonrec train-recpo --adapter DIR            # RecPO: RL of the reasoning against its ranking (TRL, resumable)
    reasonrec train-rating-sft --dataset ml-100k   # RecOne's warm start: SFT of /rate's four-tag answer (resumable)
    reasonrec train-rating-grpo --adapter DIR      # RecZero/RecOne: RL of the four-tag rating reasoning (TRL)
    reasonrec eval-llm-rating --adapter DIR        # the model's own four-tag rating: format, claims, RMSE
    reasonrec eval --dataset ml-1m                 # every ranker, one harness, reports in docs/results
    reasonrec merge-adapter --adapter DIR          # base + LoRA in one folder, for the vLLM servers

Measurements outside the recipe (`trainer.experiments`: they showed no gain, their reports keep the finding):

    reasonrec experiment reasoning-head --adapter DIR   # heads on reasoning states against direct ones
    reasonrec experiment tune-prior --dataset ml-1m     # the popularity prior's weight, on validation users
    reasonrec experiment rating-head --dataset ml-1m    # a head on the LM state at <rate> beside the rating model
    reasonrec experiment cold-diagnosis --dataset ml-100k  # cold targets among cold items: g, MiniLM, random
    reasonrec experiment title-history --dataset ml-100k   # history items by title only vs ids vs left out
    reasonrec experiment simulated-users --dataset ml-100k --protocol cold-items  # the model as the user
    reasonrec experiment grpo-curve --adapter DIR          # a GRPO run's reward curve and its rise

Each job's flags come from its config dataclass (`trainer.config_args`); `reasonrec <command> --help` lists them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainer.config_args import Help, add_config_args, config_from_args  # noqa: E402  (the environment comes first)


def _command_line() -> str:
    return "reasonrec " + " ".join(sys.argv[1:])


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def cmd_data(args: argparse.Namespace) -> int:
    import time

    from trainer.data import load_dataset

    start = time.perf_counter()
    ds = load_dataset(args.dataset, args.data_path)
    print(f"{ds.name}: {len(ds.catalog)} items, {len(ds.histories)} users, {ds.n_interactions} interactions "
          f"(loaded in {time.perf_counter() - start:.1f} s)"
          + (f"; dropped {len(ds.dropped_items)} item(s) without a usable title: {', '.join(ds.dropped_items)}"
             if ds.dropped_items else ""))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from model.engines.transformers_engine import load_engine
    from trainer.train.index import IndexJobConfig, build_index

    result = build_index(config_from_args(IndexJobConfig, args), load_engine(args.model, args.adapter, args.batch_size))
    if result.skipped:
        print(f"index at {result.out_dir} is up to date ({result.items} items); nothing to do")
    else:
        print(f"indexed {result.items} items ({result.encoded} encoded by this run) into {result.out_dir} "
              f"in {result.seconds:.0f} s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.main import serve
    from service.settings import Settings
    from trainer.train.index import prepare_index

    overrides = {"host": args.host, "port": args.port, "model": args.model, "adapter": args.adapter,
                 "dataset": args.dataset}
    if args.no_build and args.build_only:
        raise SystemExit("--no-build and --build-only exclude each other")
    serve(Settings(**{k: v for k, v in overrides.items() if v is not None}),
          prepare=None if args.no_build else prepare_index, listen=not args.build_only)
    return 0


def cmd_train_sasrec(args: argparse.Namespace) -> int:
    from trainer.train.sasrec import SasrecTrainConfig, train_sasrec

    config = config_from_args(SasrecTrainConfig, args)
    meta = train_sasrec(config).meta
    print(f"SASRec+ checkpoint {config.checkpoint_dir}: {meta['epochs']} epochs (best {meta['best_epoch']}, "
          f"{meta['train_seconds']:.0f} s); test " + "; ".join(
              f"{part}: HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f}"
              for part, m in meta["metrics"]["test"].items()))
    return 0


def cmd_fit_cold_slots(args: argparse.Namespace) -> int:
    from trainer.train.table.cold_slots import FitColdSlotsConfig, refit_cold_slots

    slots, manifest = refit_cold_slots(config_from_args(FitColdSlotsConfig, args), _command_line())
    print(f"cold slots {slots.to_meta()} written to {manifest}")
    return 0


def cmd_train_table(args: argparse.Namespace) -> int:
    from trainer.train.table.config import TableTrainConfig
    from trainer.train.table.job import train_table

    config = config_from_args(TableTrainConfig, args)
    artifact = train_table(config, command=_command_line())
    heads = artifact.meta.get("heads", {})
    valid = artifact.meta["metrics"].get("valid", {})
    print(f"item table {config.folder}: best epoch {artifact.meta['best_epoch']} of {artifact.meta['epochs']}, valid "
          f"NDCG@10 (a share of the items served by g) {valid.get('NDCG@10', float('nan')):.4f}"
          + "".join(f", {name} {m['NDCG@10']:.4f}" for name, m in heads.items() if isinstance(m, dict)))
    return 0


def _print_written(paths: Iterable[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def cmd_train_rating(args: argparse.Namespace) -> int:
    from trainer.train.rating import RatingTrainConfig, train_rating

    config = config_from_args(RatingTrainConfig, args)
    meta = train_rating(config, _command_line()).meta
    test = meta["metrics"]["test"]
    print(f"rating model {config.folder}: reg_factor {meta['chosen']['reg_factor']:g}, {meta['chosen']['sweeps']} "
          f"sweeps; test RMSE {test['RMSE']:.4f}, MAE {test['MAE']:.4f}")
    return 0


def cmd_eval_rating(args: argparse.Namespace) -> int:
    from trainer.evaluation.rating_eval import RatingEvalConfig, run_rating_eval

    _print_written(run_rating_eval(config_from_args(RatingEvalConfig, args), _command_line()))
    return 0


def cmd_train_cl(args: argparse.Namespace) -> int:
    from trainer.train.contrastive.config import ContrastiveConfig
    from trainer.train.contrastive.job import train_contrastive
    from trainer.train.contrastive.report import write_training_report

    config = config_from_args(ContrastiveConfig, args, args.recipe)
    folder = train_contrastive(config)
    _print_written(write_training_report(folder, Path("docs/results/cl"), _command_line(), args.report_name))
    print(f"adapter {folder}; build its index with `reasonrec index --dataset {config.dataset} --adapter {folder}`, "
          f"evaluate with `reasonrec eval --adapter {folder}`, serve with REASONREC_ADAPTER={folder}")
    return 0


def cmd_train_judge(args: argparse.Namespace) -> int:
    from trainer.train.judge import JudgeSftConfig, train_judge

    config = config_from_args(JudgeSftConfig, args)
    folder = train_judge(config, _command_line())
    print(f"adapter {folder}; measure it with `reasonrec experiment simulated-users --dataset {config.dataset} "
          f"--judge-adapter {folder}`")
    return 0


def cmd_train_reasoning(args: argparse.Namespace) -> int:
    from trainer.train.reasoning_sft import ReasoningSftConfig, train_reasoning

    config = config_from_args(ReasoningSftConfig, args, args.recipe)
    folder = train_reasoning(config, _command_line())
    print(f"adapter {folder}; evaluate its reasoning with `reasonrec eval-reasoning --dataset {config.dataset} "
          f"--adapter {folder}`, build its index with `reasonrec index --dataset {config.dataset} --adapter "
          f"{folder}`, serve with REASONREC_ADAPTER={folder}")
    return 0


def cmd_train_conclusion(args: argparse.Namespace) -> int:
    from model.engines.fast_engine import load_fast_engine
    from model.engines.transformers_engine import load_engine
    from trainer.train.conclusion import ConclusionConfig, train_conclusion

    config = config_from_args(ConclusionConfig, args)
    engine = (load_fast_engine(config.model, reasoning_adapter=config.adapter) if config.engine == "fast"
              else load_engine(config.model, batch_size=config.batch_size, reasoning_adapter=config.adapter))
    term, paths = train_conclusion(config, engine, _command_line())
    print(f"conclusion term +{term.genre:g} (genre), +{term.decade:g} (decade) saved in {config.adapter}")
    _print_written(paths)
    return 0


def _print_grpo(folder: Path) -> None:
    from model.engines.loading import ADAPTER_META

    meta = json.loads((folder / ADAPTER_META).read_text(encoding="utf-8"))
    print(f"adapter {folder}: {meta['steps']} steps, mean reward of the last 10 {meta['reward_last10']} "
          f"(curves in {folder / ADAPTER_META})")


def cmd_train_recpo(args: argparse.Namespace) -> int:
    from trainer.train.grpo.recpo import RecpoConfig, train_recpo

    config = config_from_args(RecpoConfig, args, args.recipe)
    folder = train_recpo(config, _command_line())
    _print_grpo(folder)
    print(f"refit its conclusion term with `reasonrec train-conclusion --dataset {config.dataset} --adapter {folder}`,"
          f" evaluate it with `reasonrec eval-reasoning --dataset {config.dataset} --adapter {folder}`")
    return 0


def cmd_train_rating_grpo(args: argparse.Namespace) -> int:
    from trainer.train.grpo.rating import RatingGrpoConfig, train_rating_grpo

    _print_grpo(train_rating_grpo(config_from_args(RatingGrpoConfig, args, args.recipe), _command_line()))
    return 0


def cmd_train_rating_sft(args: argparse.Namespace) -> int:
    from trainer.train.rating_sft import RatingSftConfig, train_rating_sft

    config = config_from_args(RatingSftConfig, args)
    folder = train_rating_sft(config, _command_line())
    print(f"adapter {folder}; measure it with `reasonrec eval-llm-rating --dataset {config.dataset} --adapter "
          f"{folder}`, train it further with `reasonrec train-rating-grpo --dataset {config.dataset} --adapter "
          f"{folder}`")
    return 0


def cmd_eval_llm_rating(args: argparse.Namespace) -> int:
    from trainer.evaluation.llm_rating_eval import LlmRatingEvalConfig, run_llm_rating_eval

    _print_written(run_llm_rating_eval(config_from_args(LlmRatingEvalConfig, args), _command_line()))
    return 0


def cmd_eval_reasoning(args: argparse.Namespace) -> int:
    from trainer.evaluation.reasoning_eval import ReasoningEvalConfig, run_reasoning_eval

    _print_written(run_reasoning_eval(config_from_args(ReasoningEvalConfig, args), _command_line()))
    return 0


def cmd_reasoning_head(args: argparse.Namespace) -> int:
    from trainer.experiments.reasoning_head import ReasoningHeadConfig, train_reasoning_head

    _print_written(train_reasoning_head(config_from_args(ReasoningHeadConfig, args), _command_line()))
    return 0


def cmd_rating_head(args: argparse.Namespace) -> int:
    from trainer.experiments.rating_head import RatingHeadConfig, train_rating_head

    config = config_from_args(RatingHeadConfig, args)
    head = train_rating_head(config, _command_line()).meta["head"]
    print(f"rating model with a head {config.folder}: ridge weight {head['ridge_weight']:g}; RMSE gain on the test "
          f"sample {head['rmse_gain_ci95']['mean']:+.4f} {list(head['rmse_gain_ci95']['ci95'])}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from trainer.evaluation.config import EvalConfig
    from trainer.evaluation.job import run_eval

    _print_written(run_eval(config_from_args(EvalConfig, args), _command_line()))
    return 0


def cmd_tune_prior(args: argparse.Namespace) -> int:
    from trainer.evaluation.config import EvalConfig
    from trainer.experiments.tune_prior import tune_prior

    config = config_from_args(EvalConfig, args, rankers=("direct",), ratings=False)
    _print_written(tune_prior(config, args.valid_users, _command_line()))
    return 0


def cmd_cold_diagnosis(args: argparse.Namespace) -> int:
    from trainer.experiments.cold_diagnosis import ColdDiagnosisConfig, cold_diagnosis

    _print_written(cold_diagnosis(config_from_args(ColdDiagnosisConfig, args), _command_line()))
    return 0


def cmd_title_history(args: argparse.Namespace) -> int:
    from trainer.experiments.title_history import TitleHistoryConfig, title_history

    _print_written(title_history(config_from_args(TitleHistoryConfig, args), _command_line()))
    return 0


def cmd_simulated_users(args: argparse.Namespace) -> int:
    from trainer.experiments.simulated_users import SimulatedUsersConfig, simulated_users

    _print_written(simulated_users(config_from_args(SimulatedUsersConfig, args), _command_line()))
    return 0


def cmd_grpo_curve(args: argparse.Namespace) -> int:
    from trainer.train.grpo.curves import GrpoCurveConfig, grpo_curve

    _print_written(grpo_curve(config_from_args(GrpoCurveConfig, args), _command_line()))
    return 0


def cmd_merge_adapter(args: argparse.Namespace) -> int:
    from model.engines.loading import folder_fingerprint
    from model.engines.merge import merge_adapter

    out = merge_adapter(args.model, args.adapter, args.out)
    fp = folder_fingerprint(out)
    print(f"merged {args.adapter} into {out} (serves as {fp.model_id} {fp.weights_hash} + lora {fp.adapter_hash}); "
          f"start the vLLM servers on it and set REASONREC_MODEL={out}")
    return 0


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local HF model folder")
    parser.add_argument("--adapter", type=Path, default=None, help="peft LoRA adapter folder to apply")


def build_parser() -> argparse.ArgumentParser:
    from trainer.evaluation.config import EvalConfig
    from trainer.evaluation.llm_rating_eval import LlmRatingEvalConfig
    from trainer.evaluation.rating_eval import RatingEvalConfig
    from trainer.evaluation.reasoning_eval import ReasoningEvalConfig
    from trainer.experiments.cold_diagnosis import ColdDiagnosisConfig
    from trainer.experiments.rating_head import RatingHeadConfig
    from trainer.experiments.reasoning_head import ReasoningHeadConfig
    from trainer.experiments.simulated_users import SimulatedUsersConfig
    from trainer.experiments.title_history import TitleHistoryConfig
    from trainer.train.conclusion import ConclusionConfig
    from trainer.train.contrastive.config import ContrastiveConfig
    from trainer.train.grpo.curves import GrpoCurveConfig
    from trainer.train.grpo.rating import RatingGrpoConfig
    from trainer.train.grpo.recpo import RecpoConfig
    from trainer.train.index import IndexJobConfig
    from trainer.train.judge import JudgeSftConfig
    from trainer.train.rating import RatingTrainConfig
    from trainer.train.rating_sft import RatingSftConfig
    from trainer.train.reasoning_sft import ReasoningSftConfig
    from trainer.train.sasrec import SasrecTrainConfig
    from trainer.train.table.cold_slots import FitColdSlotsConfig
    from trainer.train.table.config import TableTrainConfig

    parser = argparse.ArgumentParser(prog="reasonrec", description=__doc__, formatter_class=Help)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace], int], config: type | None = None,
                group: Any = sub, **config_options: tuple[str, ...]) -> argparse.ArgumentParser:
        job = group.add_parser(name, help=help_text, description=help_text, formatter_class=Help)
        if config is not None:
            add_config_args(job, config, **config_options)
            job.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
        job.set_defaults(func=func)
        return job

    data = command("data", "load a dataset and print its size", cmd_data)
    data.add_argument("--dataset", default="ml-100k", help="ml-100k, ml-1m, ml-1m-zip or amazon2023")
    data.add_argument("--data-path", type=Path, default=None, help="file or folder for ml-1m-zip and amazon2023")

    index = command("index", "encode a dataset's catalog into a FAISS index (resumable)", cmd_index, IndexJobConfig)
    _model_args(index)
    index.add_argument("--batch-size", type=int, default=16, help="item prompts per forward pass (16)")

    serve = command("serve", "build the index if missing, then serve the API on 127.0.0.1:8000", cmd_serve)
    serve.add_argument("--host", default=None, help="overrides REASONREC_HOST")
    serve.add_argument("--port", type=int, default=None, help="overrides REASONREC_PORT")
    serve.add_argument("--model", default=None, help="overrides REASONREC_MODEL")
    serve.add_argument("--adapter", type=Path, default=None, help="overrides REASONREC_ADAPTER")
    serve.add_argument("--dataset", default=None, help="overrides REASONREC_DATASET")
    serve.add_argument("--no-build", action="store_true", help="do not build a missing index")
    serve.add_argument("--build-only", action="store_true",
                       help="build what serving needs (the index over the served table) and exit")

    command("train-sasrec", "train the SASRec+ production ranker (resumable)", cmd_train_sasrec, SasrecTrainConfig)
    command("train-table", "train the served ranker's item table, encoder and heads (resumable)", cmd_train_table,
            TableTrainConfig)
    command("fit-cold-slots", "fit a finished table's cold-slot gate on its validation split (train-table does it)",
            cmd_fit_cold_slots, FitColdSlotsConfig)

    cl = command("train-cl", "contrastive LoRA alignment of user and item vectors (resumable)", cmd_train_cl,
                 ContrastiveConfig)
    cl.add_argument("--recipe", type=Path, default=None,
                    help="TOML file of settings (e.g. trainer/recipes/cl-gpu.toml); flags override it")
    cl.add_argument("--report-name", default=None,
                    help="file name (no suffix) of the report in docs/results/cl (<dataset>-<protocol>-training)")

    reasoning = command("train-reasoning", "reasoning SFT: LoRA on program-written grounded rationales (resumable)",
                        cmd_train_reasoning, ReasoningSftConfig)
    reasoning.add_argument("--recipe", type=Path, default=None,
                           help="TOML file of settings (e.g. trainer/recipes/reasoning-gpu.toml); flags override it")
    command("train-judge", "preference SFT of the model as the user (A/B between two items; resumable)",
            cmd_train_judge, JudgeSftConfig)
    command("eval-reasoning", "the model's own reasoning: marker rate, faithfulness, next-genre match, latency",
            cmd_eval_reasoning, ReasoningEvalConfig)
    command("train-conclusion", "the reasoning's conclusion as a score term: weights on validation, test report",
            cmd_train_conclusion, ConclusionConfig)
    lora = ("lora_r", "lora_alpha", "lora_dropout", "lora_modules", "lora_top_layers")
    for name, help_text, func, config, skip in (
            ("train-recpo", "RecPO: RL of the reasoning against the ranking it leads to (TRL GRPO, resumable)",
             cmd_train_recpo, RecpoConfig, lora),  # it trains the SFT adapter further: no new LoRA
            ("train-rating-grpo", "RecZero: RL of the four-tag rating reasoning (TRL GRPO, resumable)",
             cmd_train_rating_grpo, RatingGrpoConfig, ())):
        grpo = command(name, help_text, func, config, skip=skip)
        grpo.add_argument("--recipe", type=Path, default=None,
                          help="TOML file of settings (e.g. trainer/recipes/recpo-gpu.toml); flags override it")

    command("train-rating-sft", "RecOne's warm start: SFT of /rate's grounded four-tag answer (resumable)",
            cmd_train_rating_sft, RatingSftConfig)
    command("eval-llm-rating", "the model's own four-tag rating: format, claims, RMSE against the served model",
            cmd_eval_llm_rating, LlmRatingEvalConfig)
    command("eval", "evaluate rankers on one split; write docs/results reports", cmd_eval, EvalConfig)
    command("train-rating", "train the rating model that /rate serves (resumable)", cmd_train_rating,
            RatingTrainConfig)
    command("eval-rating", "the rating report on the rating protocol; writes docs/results", cmd_eval_rating,
            RatingEvalConfig)

    merge = command("merge-adapter", "merge a LoRA adapter into its base weights (for vLLM)", cmd_merge_adapter)
    merge.add_argument("--model", default="smollm2", help="base: smollm2 (default), tiny, or a local HF model folder")
    merge.add_argument("--adapter", type=Path, required=True, help="peft LoRA adapter folder")
    merge.add_argument("--out", type=Path, default=None, help="output folder (default under artifacts/models)")

    experiment = sub.add_parser("experiment", help="measurements outside the recipe (they showed no gain)",
                                description="Measurements outside the recipe: each showed no gain, and its report "
                                "keeps the finding (trainer/experiments).", formatter_class=Help)
    lab = experiment.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    command("reasoning-head", "heads on the state after the taught reasoning against the direct state; report",
            cmd_reasoning_head, ReasoningHeadConfig, group=lab)
    tune = command("tune-prior", "choose the popularity prior's weight on validation users", cmd_tune_prior,
                   EvalConfig, group=lab, skip=("rankers", "ratings", "sasrec_checkpoint", "llm_users",
                                                "reasoning_users", "reasoning_tokens", "popularity_prior",
                                                "bootstrap", "bootstrap_seed", "trec_dir"))
    tune.add_argument("--valid-users", type=int, default=300, help="seeded validation users (300)")
    command("rating-head", "the rating model with a head on the language model's state at <rate>", cmd_rating_head,
            RatingHeadConfig, group=lab)
    command("cold-diagnosis", "cold targets ranked among the cold items only: g, MiniLM and random; report",
            cmd_cold_diagnosis, ColdDiagnosisConfig, group=lab)
    command("title-history", "history items given by title only, against ids and left out; report",
            cmd_title_history, TitleHistoryConfig, group=lab)
    command("simulated-users", "the model as the user on pairs of cold items; user selection rules; report",
            cmd_simulated_users, SimulatedUsersConfig, group=lab)
    command("grpo-curve", "the reward curve of a finished GRPO run and its rise beyond the noise; report",
            cmd_grpo_curve, GrpoCurveConfig, group=lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _set_threads(getattr(args, "threads", None))
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"reasonrec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
