"""The `reasonrec` command line: one entry point for data, indexing, sanity figures and serving.

    reasonrec data --dataset ml-1m            # load a dataset and print its size
    reasonrec index --dataset ml-100k         # encode its catalog into a FAISS index (resumable)
    reasonrec sanity --dataset ml-100k        # genre overlap of nearest items vs random (vector check)
    reasonrec serve                           # make sure model + index exist, then serve on 127.0.0.1:8000
    reasonrec merge-adapter --adapter DIR     # base + LoRA merged into one folder, for the vLLM servers
    reasonrec train-sasrec --dataset ml-1m    # train SASRec+ (resumable; a no-op once done)
    reasonrec eval --dataset ml-1m --protocol leave-one-out   # every ranker, one harness, reports
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local HF model folder")
    parser.add_argument("--adapter", type=Path, default=None, help="peft LoRA adapter folder to apply")


def _add_dataset_args(parser: argparse.ArgumentParser, default: str = "ml-100k") -> None:
    parser.add_argument("--dataset", default=default, help="ml-100k, ml-1m, ml-1m-zip or amazon2023")
    parser.add_argument("--data-path", type=Path, default=None, help="file/folder for ml-1m-zip and amazon2023")


def _add_llm_eval_args(parser: argparse.ArgumentParser) -> None:
    """The LLM, its index and the user sample of `eval` and `tune-prior` (defaults: their configs')."""
    parser.add_argument("--model", default=None, help="LLM: smollm2 (default), tiny, or a local HF model folder")
    parser.add_argument("--adapter", type=Path, default=None, help="peft LoRA adapter folder to apply to the LLM")
    parser.add_argument("--index-dir", type=Path, default=None,
                        help="the LLM's item index (default: reasonrec index's)")
    parser.add_argument("--llm-batch-size", type=int, default=None, help="prompts per engine call (8)")
    parser.add_argument("--sample-seed", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=None, help="report folder (docs/results)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="LLM result cache (artifacts/eval-cache)")


def _engine(args: argparse.Namespace):
    from model.transformers_engine import load_engine

    return load_engine(args.model, args.adapter, batch_size=getattr(args, "batch_size", 8))


def cmd_data(args: argparse.Namespace) -> int:
    from trainer.data import load_dataset

    start = time.perf_counter()
    ds = load_dataset(args.dataset, args.data_path)
    print(f"{ds.name}: {len(ds.catalog)} items, {len(ds.histories)} users, {ds.n_interactions} interactions "
          f"(loaded in {time.perf_counter() - start:.1f} s)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from trainer.index_job import IndexJobConfig, build_index

    _set_threads(args)
    config = IndexJobConfig(
        dataset=args.dataset, data_path=args.data_path, out_dir=args.out, chunk_size=args.chunk_size,
        kind=args.kind, center=not args.no_center,
    )
    result = build_index(config, _engine(args))
    if result.skipped:
        print(f"index at {result.out_dir} is up to date ({result.items} items); nothing to do")
    else:
        print(f"indexed {result.items} items ({result.encoded} encoded by this run) into {result.out_dir} "
              f"in {result.seconds:.0f} s")
    return 0


def _item_index(args: argparse.Namespace):
    """(folder, fingerprint) of the item index of --model/--adapter (a user-side adapter's items are the base
    model's), or of --index-dir when given."""
    from model.loading import is_user_side_adapter, load_model
    from model.paths import default_index_dir

    fingerprint = load_model(args.model, None if is_user_side_adapter(args.adapter) else args.adapter).fingerprint
    return args.index_dir or default_index_dir(args.dataset, fingerprint), fingerprint


def cmd_sanity(args: argparse.Namespace) -> int:
    from indexer.store import ItemStore
    from trainer.sanity import genre_overlap

    folder, fingerprint = _item_index(args)
    store = ItemStore.load(folder, expect=fingerprint)
    overlap = genre_overlap(store, k=args.k, seed=args.seed)
    if overlap is None:
        print("too few items with genres for the figure")
        return 1
    print(f"{folder}: {overlap.describe()}")
    return 0


def _finished_sasrec(dataset: str) -> Path | None:
    """The dataset's default SASRec+ checkpoint if `train-sasrec` finished it; else None (sasrec answers 503)."""
    import json

    from trainer.sasrec_train import default_checkpoint_dir

    folder = default_checkpoint_dir(dataset, "leave-one-out")
    meta = folder / "meta.json"
    if meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("status") == "done":
        return folder
    print(f"no finished SASRec+ checkpoint for {dataset}: the sasrec ranker is off and the fallback is popular "
          f"(train it with `reasonrec train-sasrec --dataset {dataset}`)", flush=True)
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from model.paths import default_index_dir
    from service.main import serve
    from service.settings import Settings
    from service.state import load_engine
    from trainer.index_job import IndexJobConfig, build_index

    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "model": args.model,
                                   "adapter": args.adapter, "dataset": args.dataset}.items() if v is not None}
    settings = Settings(**overrides)
    engine = load_engine(settings)
    index_dir = settings.index_dir or default_index_dir(settings.dataset, engine.item_fingerprint)
    if not args.no_build:
        print(f"checking the {settings.dataset} index at {index_dir} (built once if missing)", flush=True)
        build_index(IndexJobConfig(dataset=settings.dataset, out_dir=index_dir), engine)
    if settings.sasrec_checkpoint is None:
        settings = settings.model_copy(update={"sasrec_checkpoint": _finished_sasrec(settings.dataset)})
    base = f"http://{settings.host}:{settings.port}"
    print(f"\nserving on {base}  (docs: {base}/docs)\ntry:\n  curl -s {base}/recommend -H 'content-type: "
          "application/json' -d '{\"history\": [{\"item_id\": \"1\", \"rating\": 5}, {\"item_id\": \"50\", "
          "\"rating\": 4}], \"k\": 5}'\n", flush=True)
    serve(settings, engine=engine)
    return 0


def cmd_merge_adapter(args: argparse.Namespace) -> int:
    from model.loading import folder_fingerprint
    from model.merge import merge_adapter

    out = merge_adapter(args.model, args.adapter, args.out)
    fp = folder_fingerprint(out)
    print(f"merged {args.adapter} into {out} (serves as {fp.model_id} {fp.weights_hash} + lora {fp.adapter_hash}); "
          f"start the vLLM servers on it and set REASONREC_MODEL={out}")
    return 0


def _add_split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", default=None, help="leave-one-out (default) or cold-items")
    parser.add_argument("--cold-frac", type=float, default=None, help="share of items held out (cold-items; 0.2)")
    parser.add_argument("--split-seed", type=int, default=None, help="seed of the cold-item draw (cold-items; 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The options among `names` that were given (not None): the job's dataclass holds every default."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _set_threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)


def cmd_train_sasrec(args: argparse.Namespace) -> int:
    from trainer.sasrec_train import SasrecTrainConfig, train_sasrec

    _set_threads(args)
    fields = ("dataset", "data_path", "protocol", "cold_frac", "split_seed", "max_len", "hidden", "blocks", "heads",
              "dropout", "lr", "batch_size", "max_epochs", "patience", "seed")
    config = SasrecTrainConfig(out_dir=args.out, **_given(args, fields))
    scorer = train_sasrec(config)
    meta = scorer.meta
    test = meta["metrics"]["test"]
    print(f"SASRec+ checkpoint {config.checkpoint_dir}: {meta['epochs']} epochs (best {meta['best_epoch']}, "
          f"{meta['train_seconds']:.0f} s); test " + "; ".join(
              f"{part}: HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f}" for part, m in test.items()))
    return 0


_CL_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("lora_r", int, "LoRA rank (8)"), ("lora_alpha", int, "LoRA alpha (16)"),
    ("lora_top_layers", int, "LoRA only on the top N layers; 0 = all (6)"),
    ("temperature", float, "softmax temperature on cosines (0.05)"), ("lr", float, "AdamW learning rate (3e-4)"),
    ("warmup_steps", int, "learning-rate warm-up steps (10)"),
    ("lr_schedule", str, "after warm-up: constant, or cosine down to lr / 10 at the last step (constant)"),
    ("batch_size", int, "users per step (16)"),
    ("steps", int, "training steps (400)"), ("recent_targets", int, "targets from each user's last N items (50)"),
    ("item_batch_size", int, "item prompts per forward when encoding the cache (16)"),
    ("cache_window", int, "cache negatives: rows written by the last N steps; 0 = the whole table (16)"),
    ("uniform_negatives", int, "items drawn uniformly per step as extra in-batch negatives with gradients, then kept in the cache window (32)"),
    ("valid_users", int, "seeded validation users (300)"), ("valid_every", int, "re-encode the item cache and validate every N steps (50)"),
    ("checkpoint_minutes", float, "write resume.pt at least this often (5)"), ("seed", int, "seed (0)"),
    ("item_draws", int, "with --full-softmax: items drawn per step from the batch's softmax for the item side (32)"),
    ("positives", int, "with --full-softmax or --frozen-items: the target and the next N - 1 training items of the "
                       "user are positives, each its own softmax term (1)"),
    ("item_pairs", int, "with --full-softmax: (item, next item) pairs per step from training sequences, each item "
                          "scored against the table with the next item as target (0)"),
    ("stats_dropout", float, "probability that a training item prompt drops its rating line, as a cold item's reads "
                             "(DropoutNet; 0)"),
    ("popularity_prior", float, "with --frozen-items: w of the prior cosine + w log(1 + count) inside the training logits (0)"),
    ("sample_pool", int, "with --lora-top-layers >= 1: cycle through a fixed pool of N samples, every prompt's states "
                         "below the LoRA layers computed once and kept on disk, so later steps run only the top layers "
                         "(0 = fresh draws)"),
    ("mixed_precision", str, "no (float32) or bf16 autocast for training: ~2x faster with AMX or a GPU, slower without bf16 units (no)"),
)


def cmd_train_cl(args: argparse.Namespace) -> int:
    from trainer.cl_report import write_training_report
    from trainer.contrastive import train_contrastive
    from trainer.contrastive_config import ContrastiveConfig

    _set_threads(args)
    fields = ("dataset", "data_path", "protocol", "cold_frac", "split_seed", "model", *(f for f, _, _ in _CL_FLAGS))
    given = _given(args, fields)
    if args.no_logq:
        given["logq"] = False
    if args.frozen_items:
        given["frozen_items"] = True
    if args.full_softmax:
        given["full_softmax"] = True
    if args.gradient_checkpointing is not None:
        given["gradient_checkpointing"] = args.gradient_checkpointing
    config = ContrastiveConfig(out_dir=args.out, **given)
    folder = train_contrastive(config)
    for path in write_training_report(folder, Path("docs/results/cl"), "reasonrec " + " ".join(sys.argv[1:]),
                                      args.report_name):
        print(f"wrote {path}")
    print(f"adapter {folder}; build its index with `reasonrec index --dataset {config.dataset} --adapter {folder}`, "
          f"evaluate with `reasonrec eval --adapter {folder}`, serve with REASONREC_ADAPTER={folder}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from trainer.eval_job import EvalConfig, run_eval

    _set_threads(args)
    fields = ("dataset", "data_path", "protocol", "cold_frac", "split_seed", "sasrec_checkpoint", "model", "adapter",
              "index_dir", "reencode", "cold_neighbors", "llm_users", "reasoning_users", "reasoning_tokens",
              "popularity_prior", "llm_batch_size", "sample_seed", "bootstrap", "bootstrap_seed", "out_dir", "trec_dir", "cache_dir")
    given = _given(args, fields)
    if args.rankers is not None:
        given["rankers"] = tuple(r.strip() for r in args.rankers.split(",") if r.strip())
    config = EvalConfig(ratings=not args.no_ratings, **given)
    for path in run_eval(config, "reasonrec " + " ".join(sys.argv[1:])):
        print(f"wrote {path}")
    return 0


def cmd_tune_prior(args: argparse.Namespace) -> int:
    from trainer.eval_job import EvalConfig
    from trainer.prior_tuning import tune_prior

    _set_threads(args)
    fields = ("dataset", "data_path", "protocol", "cold_frac", "split_seed", "model", "adapter", "index_dir",
              "llm_batch_size", "sample_seed", "out_dir", "cache_dir")
    config = EvalConfig(rankers=("direct",), ratings=False, **_given(args, fields))
    for path in tune_prior(config, args.valid_users, "reasonrec " + " ".join(sys.argv[1:])):
        print(f"wrote {path}")
    return 0


def cmd_probe_items(args: argparse.Namespace) -> int:
    from trainer.item_table_probe import ProbeConfig, probe_item_table, write_probe_report

    _set_threads(args)
    fields = ("dataset", "data_path", "protocol", "cold_frac", "split_seed", "users", "recent", "temperature", "steps",
              "lr", "prior", "seed")
    config = ProbeConfig(index_dir=_item_index(args)[0], **_given(args, fields))
    report = probe_item_table(config)
    for name, metrics in report["metrics"].items():
        print(f"{name}: HR@10 {metrics['HR@10']:.4f} NDCG@10 {metrics['NDCG@10']:.4f}")
    for path in write_probe_report(report, args.out, "reasonrec " + " ".join(sys.argv[1:])):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasonrec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="load a dataset and print its size")
    _add_dataset_args(data)
    data.set_defaults(func=cmd_data)

    index = sub.add_parser("index", help="encode a dataset's catalog into a FAISS index (resumable)")
    _add_dataset_args(index)
    _add_model_args(index)
    index.add_argument("--out", type=Path, default=None, help="index folder (default under artifacts/indexes)")
    index.add_argument("--batch-size", type=int, default=16, help="item prompts per forward pass")
    index.add_argument("--chunk-size", type=int, default=256, help="items per resumable checkpoint chunk")
    index.add_argument("--kind", default="flat", help="flat (exact), ivf or hnsw")
    index.add_argument("--no-center", action="store_true", help="do not subtract the mean item vector")
    index.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    index.set_defaults(func=cmd_index)

    sanity = sub.add_parser("sanity", help="genre overlap of nearest items vs random items")
    _add_dataset_args(sanity)
    _add_model_args(sanity)
    sanity.add_argument("--index-dir", type=Path, default=None)
    sanity.add_argument("--k", type=int, default=10)
    sanity.add_argument("--seed", type=int, default=0)
    sanity.set_defaults(func=cmd_sanity)

    train = sub.add_parser("train-sasrec", help="train the SASRec+ production ranker (resumable)")
    _add_dataset_args(train, default="ml-1m")
    _add_split_args(train)
    for flag, kind, what in (("--max-len", int, "most recent items read per history"), ("--hidden", int, "hidden size"),
                             ("--blocks", int, "attention blocks"), ("--heads", int, "attention heads"),
                             ("--dropout", float, "dropout rate"), ("--lr", float, "Adam learning rate"),
                             ("--batch-size", int, "users per step"), ("--max-epochs", int, "at most this many epochs"),
                             ("--patience", int, "epochs without a better valid NDCG@10"), ("--seed", int, "seed")):
        train.add_argument(flag, type=kind, default=None, help=f"{what} (default: the paper's SASRec+ setting)")
    train.add_argument("--out", type=Path, default=None, help="checkpoint folder (default under artifacts/sasrec)")
    train.set_defaults(func=cmd_train_sasrec)

    cl = sub.add_parser("train-cl", help="contrastive LoRA alignment of user and item vectors (resumable)")
    _add_dataset_args(cl, default="ml-1m")
    _add_split_args(cl)
    cl.add_argument("--model", default=None, help="base LLM: smollm2 (default), tiny, or a local HF model folder")
    for name, kind, what in _CL_FLAGS:
        cl.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=what)
    cl.add_argument("--no-logq", action="store_true", help="no popularity correction of in-batch and cache logits")
    cl.add_argument("--frozen-items", action="store_true",
                    help="train the user side only: items keep the base model's vectors (its index), full softmax")
    cl.add_argument("--full-softmax", action="store_true",
                    help="train both sides on a full softmax over an item table re-encoded at each validation; items "
                         "learn through the targets and --item-draws items drawn from the softmax")
    cl.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="recompute activations in the backward pass: less memory, more compute (off)")
    cl.add_argument("--out", type=Path, default=None, help="adapter folder (default under artifacts/adapters)")
    cl.add_argument("--report-name", default=None,
                    help="file name (no suffix) of the run's report in docs/results/cl (<dataset>-<protocol>-training)")
    cl.set_defaults(func=cmd_train_cl)

    ev = sub.add_parser("eval", help="evaluate rankers on one split; write docs/results reports")
    _add_dataset_args(ev, default="ml-1m")
    _add_split_args(ev)
    ev.add_argument("--rankers", default=None, help="comma-separated: sasrec,popular,content,direct,reasoning (all)")
    ev.add_argument("--sasrec-checkpoint", type=Path, default=None, help="default: train-sasrec's folder")
    _add_llm_eval_args(ev)
    ev.add_argument("--reencode", default=None,
                    help="items re-encoded from train stats: cold (default), all, or bare (all, no rating line)")
    ev.add_argument("--cold-neighbors", type=int, default=None,
                    help="cold-items: a cold item's vector is the mean of its N most content-similar warm items' "
                         "(MiniLM); 0 = its own prompt's (0)")
    ev.add_argument("--llm-users", type=int, default=None, help="seeded users per part for direct (300)")
    ev.add_argument("--reasoning-users", type=int, default=None, help="of those, users for reasoning (100)")
    ev.add_argument("--reasoning-tokens", type=int, default=None, help="reasoning token budget (64)")
    ev.add_argument("--popularity-prior", type=float, default=None,
                    help="LLM rankers score cosine + w x log(1 + training interactions) (0: plain cosine)")
    ev.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (1000)")
    ev.add_argument("--bootstrap-seed", type=int, default=None)
    ev.add_argument("--no-ratings", action="store_true", help="skip rating prediction (leave-one-out)")
    ev.add_argument("--trec-dir", type=Path, default=None, help="also write TREC runs + qrels here")
    ev.set_defaults(func=cmd_eval)

    tune = sub.add_parser("tune-prior", help="choose the popularity prior's weight on validation users")
    _add_dataset_args(tune, default="ml-1m")
    _add_split_args(tune)
    _add_llm_eval_args(tune)
    tune.add_argument("--valid-users", type=int, default=300, help="seeded validation users (300)")
    tune.set_defaults(func=cmd_tune_prior)

    probe = sub.add_parser("probe-items", help="how far a free user vector gets over a fixed item table")
    _add_dataset_args(probe, default="ml-1m")
    _add_split_args(probe)
    _add_model_args(probe)
    probe.add_argument("--index-dir", type=Path, default=None, help="the item table (default: the model's index)")
    probe.add_argument("--users", type=int, default=None, help="seeded test users (300)")
    probe.add_argument("--recent", type=int, default=None, help="positives: each user's N most recent items (20)")
    probe.add_argument("--temperature", type=float, default=None, help="softmax temperature on cosines (0.05)")
    probe.add_argument("--steps", type=int, default=None, help="Adam steps (300)")
    probe.add_argument("--lr", type=float, default=None, help="Adam learning rate (0.05)")
    probe.add_argument("--prior", type=float, default=None, help="popularity prior weight of the second ranking (0.2)")
    probe.add_argument("--seed", type=int, default=None, help="seed of the user sample (0)")
    probe.add_argument("--out", type=Path, default=Path("docs/results/cl/item-table-probe"),
                       help="report path without suffix (docs/results/cl/item-table-probe)")
    probe.set_defaults(func=cmd_probe_items)

    merge = sub.add_parser("merge-adapter", help="merge a LoRA adapter into its base weights (for vLLM)")
    merge.add_argument("--model", default="smollm2", help="base: smollm2 (default), tiny, or a local HF model folder")
    merge.add_argument("--adapter", type=Path, required=True, help="peft LoRA adapter folder")
    merge.add_argument("--out", type=Path, default=None, help="output folder (default under artifacts/models)")
    merge.set_defaults(func=cmd_merge_adapter)

    serve = sub.add_parser("serve", help="prepare model and index if missing, then serve the API")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--model", default=None, help="overrides REASONREC_MODEL")
    serve.add_argument("--adapter", type=Path, default=None, help="overrides REASONREC_ADAPTER")
    serve.add_argument("--dataset", default=None, help="overrides REASONREC_DATASET")
    serve.add_argument("--no-build", action="store_true", help="do not build a missing index")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"reasonrec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
