"""Train any task of this project with Accelerate: one loop for captioning, segmentation and both.

    accelerate launch scripts/train.py --task segment --dataset shapes --output-dir runs/seg
    accelerate launch scripts/train.py --task caption --dataset flickr8k_captions_json --root ../shared/data/flickr8k
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --task segment ...  # two processes (CPU too)
    python scripts/train.py --task segment ... --resume latest                        # continue exactly

The task (``--task``, see ``models/task.py``) supplies the model, the data transforms, the loss and the
validation; this file owns only the loop: AdamW with warm-up + cosine schedule, gradient accumulation and
clipping, bf16 autocast, checkpoints every N steps, ``--resume`` (model, optimizer, schedule, RNG and data
position), TensorBoard scalars, a progress bar, validation every epoch, the best model by the task's metric in
``OUTPUT_DIR/best`` and ``--push-to-hub``. ``python scripts/train.py --task NAME --help`` lists a task's flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

# Run as a script, Python puts scripts/ first on sys.path, where scripts/evaluate.py would shadow the `evaluate`
# library: put the repository root there instead.
_SCRIPTS = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _SCRIPTS]
sys.path.insert(0, str(_SCRIPTS.parent))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.logging import get_logger  # noqa: E402
from accelerate.utils import (  # noqa: E402
    DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed,
)
from safetensors import SafetensorError  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import get_scheduler  # noqa: E402

from datasets_cfg import (  # noqa: E402
    DatasetError, load_config, load_dataset_from_config, parse_overrides, resolve_config_path,
)
from models.depthwise_precision import keep_depthwise_convs_fp32  # noqa: E402
from models.imagenet_weights import MissingWeightsPackage  # noqa: E402
from models.task import TASKS  # noqa: E402
from models.training_curves import plot_training_curves  # noqa: E402

logger = get_logger("train")
MODEL_CONFIG_FILE = "model_config.json"  # saved next to each checkpoint's state, compared by --resume
TASK_IDENTITY_FILE = "task_identity.json"  # the same for what a task's model depends on besides its config
# Config keys that differ between equal models: save_pretrained sets architectures and auto_map on the live model's
# config (so checkpoints after the first validation's save hold them, a freshly built model does not).
BOOKKEEPING_KEYS = ("transformers_version", "dtype", "torch_dtype", "architectures", "auto_map")


def import_tasks(extra: list[str] = ()) -> None:
    """Tasks register themselves when their module is imported; ``--task-module`` adds a module of your own."""
    import importlib

    for module in extra:
        importlib.import_module(module)
    for module in ("models.segmentation_task", "models.caption_task", "models.caption_seg_task"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a task that exists but cannot import is a real error
                raise


def build_parser(task_name: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--task", required=True, choices=sorted(TASKS), help="what to train")
    g.add_argument("--task-module", action="append", default=[], metavar="MODULE",
                   help="import this module first: a task of your own registered with models.task.register_task")
    g.add_argument("--dataset", required=True, help="dataset YAML path or shipped name (shapes, camvid, ...)")
    g.add_argument("--root", help="the dataset's folder (wins over the YAML's root)")
    g.add_argument("--data-set", action="append", default=[], metavar="KEY=VALUE", help="override a dataset YAML key")
    g.add_argument("--train-split", default="train")
    g.add_argument("--eval-split", default="validation")
    g.add_argument("--max-train-samples", type=int, help="use only the first N training rows")
    g.add_argument("--max-eval-samples", type=int, help="use only the first N validation rows")
    g.add_argument("--cache-dir", help="Arrow cache folder (default: the datasets cache)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--output-dir", required=True)
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides --epochs)")
    g.add_argument("--time-budget-min", type=float, help="stop training after this many minutes, then validate")
    g.add_argument("--stop-after-steps", type=int,
                   help="pause after this many steps (checkpointed, schedule unchanged); continue with --resume")
    g.add_argument("--batch-size", type=int, default=16, help="per process")
    g.add_argument("--eval-batch-size", type=int, default=32, help="per process")
    g.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--scheduler", default="cosine", choices=["cosine", "linear", "constant_with_warmup"])
    g.add_argument("--warmup-steps", type=int, default=30)
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (also on CPU)")
    g.add_argument("--channels-last", action="store_true",
                   help="convolution weights and images in channels-last memory format (on a 2-core CPU the "
                        "captioner's steps ran 1.5x, the caption-seg model's 1.3x faster; models/memory_format.py)")
    g.add_argument("--bf16-depthwise", choices=["fp32", "bf16"], default="fp32",
                   help="precision of depthwise convolutions under --bf16 on a CPU: fp32 (default; oneDNN's bf16 "
                        "depthwise kernels are slower: the shapes U-Net trained 1.2x faster so; "
                        "models/depthwise_precision.py) or bf16 (autocast's own choice)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    g.add_argument("--threads", type=int, help="torch threads per process (default: torch's choice)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    g = p.add_argument_group("checkpoints and logging")
    g.add_argument("--checkpoint-every", type=int, default=0, help="save a resumable checkpoint every N steps (0: per epoch)")
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--resume", help="checkpoint folder to continue from, or 'latest'")
    g.add_argument("--eval-every-epochs", type=int, default=1)
    g.add_argument("--logging-steps", type=int, default=10)
    g.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    g.add_argument("--push-to-hub", action="store_true", help="push the best model with push_to_hub at the end")
    g.add_argument("--hub-model-id", help="repository id for --push-to-hub (default: the output folder's name)")
    if task_name in TASKS:
        TASKS[task_name].add_arguments(p.add_argument_group(f"task '{task_name}'"))
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task")
    pre.add_argument("--task-module", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    import_tasks(known.task_module)
    args = build_parser(known.task).parse_args(argv)
    def flag(name: str) -> str:
        return f"--{name.replace('_', '-')}"

    for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "eval_every_epochs", "logging_steps",
                 "max_train_samples", "max_eval_samples", "max_steps", "stop_after_steps", "keep_checkpoints"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            build_parser(None).error(f"{flag(name)} must be at least 1")
    for name in ("warmup_steps", "checkpoint_every", "num_workers", "weight_decay", "max_grad_norm"):
        if getattr(args, name) < 0:
            build_parser(None).error(f"{flag(name)} must be >= 0")
    if not args.lr > 0:
        build_parser(None).error(f"--lr must be positive, not {args.lr}")
    if args.time_budget_min is not None and not args.time_budget_min > 0:
        build_parser(None).error(f"--time-budget-min must be positive, not {args.time_budget_min}")
    return args



class LoopState:
    """Where the loop is, saved in every checkpoint next to Accelerate's model/optimizer/scheduler/RNG state."""

    def __init__(self):
        self.global_step = 0  # optimizer steps done
        self.epoch = 0  # current epoch
        self.batches_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.best_metric: float | None = None
        self.best_step: int | None = None

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise SystemExit(f"error: --resume {resume}: no such checkpoint folder")
        return path
    found = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    if not found:
        raise SystemExit(f"error: --resume latest: no checkpoint under {output_dir / 'checkpoints'}")
    return found[-1]


def model_config_of(accelerator: Accelerator, model) -> dict | None:
    """The model's configuration as JSON would store it (None for a model without a transformers config)."""
    config = getattr(accelerator.unwrap_model(model), "config", None)
    return json.loads(config.to_json_string(use_diff=False)) if hasattr(config, "to_json_string") else None


def config_differences(saved, current, prefix: str = "") -> list[str]:
    """``key: saved -> current`` for every setting that differs, nested configs (encoder, decoder) flattened."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            if key.startswith("_") or key in BOOKKEEPING_KEYS:
                continue
            out += config_differences(saved.get(key), current.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == current else [f"{prefix[:-1]}: {saved!r} -> {current!r}"]


def load_checkpoint(accelerator: Accelerator, ckpt: Path, model, task_identity: dict | None = None) -> None:
    """``accelerator.load_state`` with clear errors for a checkpoint of another model or a damaged one.

    ``task_identity`` (``TrainingTask.checkpoint_identity``) is what else the checkpoint must share with this run,
    e.g. the captioner's vocabulary: same sizes, other words would load without complaint and train nonsense."""
    current = {MODEL_CONFIG_FILE: model_config_of(accelerator, model), TASK_IDENTITY_FILE: task_identity or None}
    for name, now in current.items():
        saved_path = ckpt / name
        if now is None or not saved_path.is_file():
            continue  # checkpoints made before the file existed are checked by load_state alone
        try:
            saved = json.loads(saved_path.read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"error: --resume {ckpt}: unreadable {name} ({err})") from None
        diffs = config_differences(saved, now)
        if diffs:
            # Sizes that differ would fail inside load_state; equal sizes with other classes or words would not.
            raise SystemExit(
                f"error: --resume {ckpt}: the checkpoint is of a different model than these options and data build "
                f"({'; '.join(diffs[:8])}{'; ...' if len(diffs) > 8 else ''}). Resume with the options and dataset "
                "it was trained with, or train into a new --output-dir"
            )
    if not (ckpt / "model.safetensors").is_file():
        # Accelerate would name the pickle file it falls back to (pytorch_model.bin), not the one that is missing.
        raise SystemExit(f"error: --resume {ckpt}: the checkpoint has no model.safetensors (incomplete or damaged); "
                         "pick another step under checkpoints/ or train into a new --output-dir")
    try:
        accelerator.load_state(str(ckpt))
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SystemExit(
            f"error: --resume {ckpt}: cannot load this checkpoint ({type(err).__name__}: {first_line[:300]}). "
            "It is incomplete or corrupt, or was saved by a different model; pick another step under checkpoints/ "
            "or train into a new --output-dir"
        ) from None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int, model=None,
                    task_identity: dict | None = None) -> None:
    folder = output_dir / "checkpoints" / f"step_{step}"
    if folder.is_dir():  # already saved at this step (e.g. --checkpoint-every fell on the last step)
        return
    accelerator.save_state(str(folder))  # model, optimizer, scheduler, RNG, sampler and LoopState; safetensors
    config = model_config_of(accelerator, model) if model is not None else None
    if accelerator.is_main_process and config is not None:
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2))  # what --resume checks against
    if accelerator.is_main_process and task_identity:
        (folder / TASK_IDENTITY_FILE).write_text(json.dumps(task_identity, indent=2))
    if accelerator.is_main_process:
        found = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in found[: max(len(found) - keep, 0)]:
            shutil.rmtree(old, ignore_errors=True)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX). Without it, bf16 autocast is emulated
    and runs several times slower than fp32 (about 10x on an AVX2-only AMD EPYC); torch has no public check."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True  # cannot tell: say nothing


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Accelerate runs several processes on CPU (gloo) only when told cpu=True: its launcher starts them with
    # `accelerate launch --multi_gpu --num_processes N` (plain `--cpu` starts one), so say so when there is no GPU.
    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=args.cpu or (multi_process and not torch.cuda.is_available()),
        gradient_accumulation_steps=args.grad_accum,
        mixed_precision="bf16" if args.bf16 else "no",
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # A seeded sampler makes the shuffle order a function of (seed, epoch): what exact --resume needs.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        # Some models hold parameters a forward pass never uses (smp's timm encoders at --encoder-depth < 5 keep
        # timm's later stages); without this, multi-process runs stop at the first step.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.bf16 and accelerator.device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning(
            "--bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX, capability %s): autocast is emulated and "
            "usually much slower than fp32 here; drop --bf16 unless you measured otherwise",
            torch.backends.cpu.get_cpu_capability(),
        )
    set_seed(args.seed)
    try:
        data_config = load_config(resolve_config_path(args.dataset), **parse_overrides(args.data_set))
        # The main process builds the Arrow cache first; the others then read it instead of racing to write it.
        with accelerator.main_process_first():
            data = load_dataset_from_config(data_config, root=args.root, cache_dir=args.cache_dir,
                                            splits=[args.train_split, args.eval_split])
    except DatasetError as err:
        accelerator.print(f"error: {err}")
        return 2
    if args.max_train_samples:
        data[args.train_split] = data[args.train_split].select(range(min(args.max_train_samples, data[args.train_split].num_rows)))
    if args.max_eval_samples:
        data[args.eval_split] = data[args.eval_split].select(range(min(args.max_eval_samples, data[args.eval_split].num_rows)))

    try:
        # Tasks raise ValueError for flags they cannot use (an unknown loss, a wrong --init-from folder, ...).
        task = TASKS[args.task](args, data, data_config)
        model = task.build_model()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if args.bf16 and accelerator.device.type == "cpu" and args.bf16_depthwise == "fp32":
            logger.info("--bf16 on CPU: %d depthwise convolutions kept in fp32 (--bf16-depthwise)",
                        keep_depthwise_convs_fp32(model))
        train_ds, eval_ds = task.train_dataset(), task.eval_dataset()
        # Tasks check their learning-rate flags here (e.g. a negative --encoder-lr), and AdamW its own.
        optimizer = torch.optim.AdamW(task.param_groups(model), lr=args.lr, weight_decay=args.weight_decay)
    except (DatasetError, ValueError, MissingWeightsPackage) as err:
        accelerator.print(f"error: {err}")
        return 2
    train_dl = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, collate_fn=task.collate,
                          num_workers=args.num_workers, drop_last=False,
                          # Its own generator, so that making an iterator never draws from the global RNG that
                          # dropout uses (a resumed run would otherwise draw once more than the uninterrupted one).
                          generator=torch.Generator().manual_seed(args.seed))
    eval_dl = DataLoader(eval_ds, batch_size=args.eval_batch_size, shuffle=False,
                         collate_fn=task.eval_collate, num_workers=args.num_workers,
                         generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, train_dl, eval_dl = accelerator.prepare(model, optimizer, train_dl, eval_dl)

    steps_per_epoch = math.ceil(len(train_dl) / args.grad_accum)
    max_steps = args.max_steps or args.epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    scheduler = get_scheduler(args.scheduler, optimizer, num_warmup_steps=min(args.warmup_steps, max_steps),
                              num_training_steps=max_steps)
    scheduler = accelerator.prepare(scheduler)
    state = LoopState()
    accelerator.register_for_checkpointing(state)

    if args.resume:
        ckpt = find_checkpoint(output_dir, args.resume)
        load_checkpoint(accelerator, ckpt, model, task.checkpoint_identity())
        accelerator.print(f"resumed from {ckpt}: step {state.global_step}, epoch {state.epoch}, "
                          f"{state.batches_in_epoch} batches into it")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_args.json").write_text(json.dumps(
            {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}, indent=2))
    accelerator.init_trackers("train", config={k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool))})

    logger.info(f"task {args.task}: {data[args.train_split].num_rows} training rows, {len(train_dl)} batches per "
                f"epoch per process, {accelerator.num_processes} process(es) on {accelerator.device}, "
                f"{max_steps} optimizer steps", main_process_only=True)
    bar = tqdm(total=max_steps, initial=state.global_step, desc=f"train {args.task}", dynamic_ncols=True,
               disable=args.no_progress or not accelerator.is_local_main_process)
    history_path = output_dir / "history.jsonl"
    start, stop_reason = time.monotonic(), None
    running: dict[str, float] = {}
    running_n = 0
    # Training throughput per logging window: wall time of the steps only (validation and checkpoints excluded).
    window_start, window_steps = time.monotonic(), 0
    images_per_step = args.batch_size * args.grad_accum * accelerator.num_processes
    while state.epoch < num_epochs and stop_reason is None:
        train_dl.set_epoch(state.epoch)
        task.set_epoch(state.epoch)
        model.train()
        epoch_dl = accelerator.skip_first_batches(train_dl, state.batches_in_epoch) if state.batches_in_epoch else train_dl
        for batch in epoch_dl:
            with accelerator.accumulate(model):
                loss, logs = task.training_step(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state.batches_in_epoch += 1
            for k, v in {"loss": loss.detach().float().item(), **logs}.items():
                running[k] = running.get(k, 0.0) + float(v)
            running_n += 1
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            window_steps += 1
            bar.update(1)
            if state.global_step % args.logging_steps == 0 or state.global_step == max_steps:
                scalars = {f"train/{k}": v / running_n for k, v in running.items()}
                scalars["train/lr"] = scheduler.get_last_lr()[0]
                scalars["train/images_per_s"] = window_steps * images_per_step / max(time.monotonic() - window_start, 1e-9)
                accelerator.log(scalars, step=state.global_step)
                bar.set_postfix(loss=f"{scalars['train/loss']:.4f}")
                if accelerator.is_main_process:
                    with history_path.open("a") as f:
                        f.write(json.dumps({"step": state.global_step, **scalars}) + "\n")
                running, running_n = {}, 0
                window_start, window_steps = time.monotonic(), 0
            if args.checkpoint_every and state.global_step % args.checkpoint_every == 0:
                save_checkpoint(accelerator, output_dir, state.global_step, args.keep_checkpoints, model,
                                task.checkpoint_identity())
                if window_steps == 0:  # a save right after a log does not count as training time
                    window_start = time.monotonic()
            if state.global_step >= max_steps:
                stop_reason = "max_steps"
                break
            if args.stop_after_steps and state.global_step >= args.stop_after_steps:
                stop_reason = f"--stop-after-steps {args.stop_after_steps}"
                break
            if args.time_budget_min and (time.monotonic() - start) / 60 >= args.time_budget_min:
                stop_reason = f"time budget of {args.time_budget_min} min"
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
        if stop_reason is not None and state.batches_in_epoch >= len(train_dl):
            # The step that stopped the run was also the epoch's last batch, so the epoch is complete.
            state.epoch += 1
            state.batches_in_epoch = 0
        last_epoch = stop_reason is not None or state.epoch >= num_epochs
        if last_epoch or state.epoch % args.eval_every_epochs == 0:
            try:
                validate(accelerator, task, model, eval_dl, state, output_dir, history_path, time.monotonic() - start)
            except DatasetError as err:  # e.g. a validation image that no longer decodes (models/decode_failures.py)
                kept = ""
                if accelerator.num_processes == 1:  # with several, the others wait in a collective: no save
                    save_checkpoint(accelerator, output_dir, state.global_step, args.keep_checkpoints, model,
                                    task.checkpoint_identity())
                    kept = f"; the training so far (step {state.global_step}) is checkpointed: --resume latest"
                accelerator.print(f"error: validation at step {state.global_step}: {err}{kept}")
                bar.close()
                accelerator.end_training()
                return 2
        if not args.checkpoint_every or last_epoch:
            save_checkpoint(accelerator, output_dir, state.global_step, args.keep_checkpoints, model,
                            task.checkpoint_identity())
        window_start, window_steps = time.monotonic(), 0  # the next window starts with the next epoch's steps
    bar.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        task.save_pretrained(accelerator.unwrap_model(model), str(output_dir / "last"))
        plot_training_curves(history_path, output_dir / "training_curves.png")
        accelerator.print(f"done ({stop_reason or 'all epochs'}) after {state.global_step} steps in "
                          f"{(time.monotonic() - start) / 60:.1f} min; best {task.main_metric} "
                          f"{state.best_metric} at step {state.best_step} -> {output_dir / 'best'}")
        if args.push_to_hub:
            repo_id = args.hub_model_id or output_dir.resolve().name
            push_to_hub(type(accelerator.unwrap_model(model)), output_dir / "best", repo_id)
            accelerator.print(f"pushed {output_dir / 'best'} to the Hub as {repo_id}")
    accelerator.end_training()
    return 0


def push_to_hub(model_class, folder: Path, repo_id: str) -> None:
    """Push the best model folder with the stock ``push_to_hub`` of the model and of its processor/tokenizer."""
    from transformers import AutoImageProcessor, AutoTokenizer

    model_class.from_pretrained(folder).push_to_hub(repo_id)
    if (folder / "preprocessor_config.json").is_file():
        AutoImageProcessor.from_pretrained(folder, trust_remote_code=True).push_to_hub(repo_id)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(folder).push_to_hub(repo_id)


def validate(accelerator, task, model, eval_dl, state: LoopState, output_dir: Path, history_path: Path,
             elapsed_s: float) -> None:
    """Score the model on the evaluation split, log it, and save it as ``best`` when it improves.

    ``elapsed_s`` (wall seconds since this process started its training loop, earlier validations included; a
    resumed run counts from its own start) goes into the history as ``elapsed_min``, so that curves can be drawn
    against time as well as steps.
    """
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate(accelerator.unwrap_model(model), eval_dl, accelerator)
    model.train()
    if task.main_metric not in metrics:
        raise RuntimeError(f"task {task.name} did not report its main metric {task.main_metric!r}")
    scalars = {f"eval/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    accelerator.log(scalars, step=state.global_step)
    value = float(metrics[task.main_metric])
    if math.isnan(value):
        # Nothing scorable in the evaluation split (e.g. every pixel ignored): no checkpoint can win on it.
        logger.warning(f"validation at step {state.global_step}: {task.main_metric} is undefined (NaN); this model "
                       "is not kept as the best; check the evaluation split", main_process_only=True)
        better = False
    else:
        better = state.best_metric is None or (
            value > state.best_metric if task.greater_is_better else value < state.best_metric)
    summary = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in metrics.items() if isinstance(v, (float, str)) and "/" not in k)
    accelerator.print(f"validation at step {state.global_step} (epoch {state.epoch}): {summary}")
    if better:
        state.best_metric, state.best_step = value, state.global_step
    if accelerator.is_main_process:
        with history_path.open("a") as f:
            f.write(json.dumps({"step": state.global_step, "epoch": state.epoch,
                                "elapsed_min": round(elapsed_s / 60, 2), **scalars}) + "\n")
        if better:
            task.save_pretrained(accelerator.unwrap_model(model), str(output_dir / "best"))
            (output_dir / "best" / "eval_metrics.json").write_text(json.dumps(
                {"step": state.global_step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}}, indent=2))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
