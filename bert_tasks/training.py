"""The one training loop (Accelerate): every task and strategy trains through ``train``.

Read top to bottom: set up the accelerator and run directory, build task + model,
encode data, make loaders/optimiser/schedule, ``prepare`` once, then loop over
epochs with ``accelerator.accumulate``, evaluating, keeping the best weights and
saving resumable checkpoints as configured.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .assembly import build_model, prepare_task
from .batching import LengthGroupedBatches
from .checkpointing import TrainerState, latest_checkpoint, save_checkpoint
from .config import RunConfig
from .errors import BertTasksError, ConfigError
from .evaluation import eval_loader, evaluate
from .metrics import greater_is_better
from .optim import make_optimizer
from .parameters import format_report, parameter_report
from .rundir import BEST_DIR, CHECKPOINTS_DIR, PARAMETERS_FILE, SUMMARY_FILE, append_metrics, load_trained, save_weights, weights_size, write_run_files
from .runtime import make_accelerator, peak_memory_mb
from .strategies.base import Strategy
from .summary import RunSummary


def _prepare_run_dir(config: RunConfig, accelerator: Accelerator) -> Path:
    run_dir = config.run_dir
    has_state = (run_dir / CHECKPOINTS_DIR).is_dir() or (run_dir / SUMMARY_FILE).is_file()
    if has_state and not config.train.resume and not config.output.overwrite:
        raise BertTasksError(
            f"{run_dir}: already holds a run; continue it with train.resume=true, replace it with "
            "output.overwrite=true, or pick another output.name"
        )
    if accelerator.is_main_process and config.output.overwrite and not config.train.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    accelerator.wait_for_everyone()
    return run_dir


def train(config: RunConfig) -> RunSummary:
    """Train, evaluate and save one run; returns its summary (also in RUN_DIR/summary.json)."""
    tc = config.train
    accelerator = make_accelerator(tc, config.run_dir)
    run_dir = _prepare_run_dir(config, accelerator)
    main = accelerator.is_main_process
    set_seed(tc.seed)
    if tc.batch_size % accelerator.num_processes or tc.eval_batch_size % accelerator.num_processes:
        raise ConfigError(f"train.batch_size={tc.batch_size} and eval_batch_size={tc.eval_batch_size} must divide by the {accelerator.num_processes} processes")
    task, splits = prepare_task(config)
    train_data = task.encode(splits["train"])  # bad rows fail here, before weights are loaded
    eval_data = task.encode(splits["validation"]) if "validation" in splits else None
    assembly = build_model(config, task, task.tokenizer)
    model = assembly.model
    if main:
        write_run_files(run_dir, config, task.state_dict())
    best_metric = tc.best_metric or task.metric_names[0]
    if best_metric not in (*task.metric_names, "loss"):
        raise ConfigError(f"train.best_metric={best_metric!r}: the task reports {', '.join(task.metric_names)}, loss")

    sampler = LengthGroupedBatches(train_data.lengths, tc.batch_size, shuffle=True, seed=tc.seed, group_by_length=tc.group_by_length)
    # Own generator: a DataLoader otherwise draws its seed from the global RNG, which would shift
    # dropout masks after a resume (the iterator is re-created mid-epoch).
    train_loader = DataLoader(train_data, batch_sampler=sampler, collate_fn=task.collate, num_workers=tc.num_workers, generator=torch.Generator().manual_seed(tc.seed))
    loaders = [train_loader] + ([eval_loader(eval_data, task, tc.eval_batch_size, tc.num_workers)] if eval_data else [])
    steps_per_epoch = math.ceil(len(sampler) / tc.gradient_accumulation_steps)
    total_steps = max(1, math.ceil(steps_per_epoch * tc.epochs))
    warmup = tc.warmup_steps or math.ceil(tc.warmup_ratio * total_steps)
    optimizer = make_optimizer(model, tc)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    model, optimizer, scheduler, *loaders = accelerator.prepare(model, optimizer, scheduler, *loaders)
    train_loader, eval_dl = loaders[0], (loaders[1] if eval_data else None)

    state = TrainerState()
    accelerator.register_for_checkpointing(state)
    checkpoint = latest_checkpoint(run_dir) if tc.resume else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
    report = parameter_report(accelerator.unwrap_model(model))
    trainable, total = report["trainable"], report["total"]
    if main:
        (run_dir / PARAMETERS_FILE).write_text(json.dumps(report, indent=2))
        print(format_report(report))
    if tc.log_with:
        accelerator.init_trackers(run_dir.name, config={"learning_rate": tc.learning_rate, "batch_size": tc.batch_size, "strategy": assembly.strategy.describe()})
    if main and checkpoint is None:
        append_metrics(run_dir, {"event": "start", "trainable_parameters": trainable, "total_parameters": total, "train_examples": len(train_data), "total_steps": total_steps, "processes": accelerator.num_processes})

    def run_evaluation() -> bool:
        """Evaluate, keep the best weights; True when early stopping says stop."""
        if eval_dl is None:
            return False
        results = evaluate(accelerator, model, eval_dl, task, eval_data)
        value = results[best_metric]
        better = state.best_value is None or (value > state.best_value if greater_is_better(best_metric) else value < state.best_value)
        if better:
            state.best_value, state.best_step, state.best_metrics = value, state.global_step, results
            state.evals_without_improvement = 0
            if main:
                save_weights(run_dir / BEST_DIR, assembly, accelerator.unwrap_model(model))
        else:
            state.evals_without_improvement += 1
        record = {"event": "eval", "step": state.global_step, "epoch": round(state.global_step / steps_per_epoch, 3), **results}
        if main:
            append_metrics(run_dir, record)
            shown = {k: v for k, v in record.items() if "/" not in k}  # per-type breakdowns stay in metrics.jsonl
            progress.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
        accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=state.global_step)
        accelerator.wait_for_everyone()
        return tc.early_stopping_patience > 0 and state.evals_without_improvement >= tc.early_stopping_patience

    progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_local_main_process, desc=run_dir.name)
    running_loss, running_batches = torch.zeros(()), 0
    stop = state.finished or state.global_step >= total_steps
    evaluated_at = saved_at = state.global_step if checkpoint is not None else -1
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    while not stop:
        sampler.use_epoch(state.epoch)
        loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) if state.batches_in_epoch else train_loader
        model.train()
        started = time.perf_counter()
        for batch in loader:
            with accelerator.accumulate(model):
                outputs, labels = model(**batch["inputs"]), batch["labels"]
                real = sampler.real_rows(state.batches_in_epoch, accelerator.process_index, accelerator.num_processes)
                if real == 0:  # a share made only of copies: zero loss, but every parameter in the graph (DDP)
                    summed, count = outputs.float().sum() * 0.0, torch.zeros((), device=outputs.device)
                else:
                    summed, count = task.loss_sum(outputs[:real], labels[:real])
                # the mean over the items of all processes' batches (DDP averages gradients, hence * processes)
                if accelerator.num_processes > 1:
                    count = accelerator.reduce(count, reduction="sum") / accelerator.num_processes
                loss = summed / count.clamp(min=1.0)
                accelerator.backward(loss)
                if accelerator.sync_gradients and tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable_params, tc.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running_loss += loss.detach().float()
            running_batches += 1
            state.samples_seen += sampler.rows_in_batch(state.batches_in_epoch)
            state.batches_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            progress.update(1)
            if state.global_step % tc.log_every == 0 or state.global_step == total_steps:
                mean_loss = accelerator.reduce(running_loss.clone(), reduction="mean").item() / running_batches
                record = {"event": "train", "step": state.global_step, "loss": mean_loss, "learning_rate": scheduler.get_last_lr()[0]}
                if main:
                    append_metrics(run_dir, record)
                accelerator.log({"train/loss": mean_loss, "train/learning_rate": record["learning_rate"]}, step=state.global_step)
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                running_loss, running_batches = torch.zeros(()), 0
            done = state.global_step >= total_steps
            due_eval = tc.eval_every != "epoch" and state.global_step % tc.eval_every == 0
            due_save = tc.save_every != "eval" and state.global_step % tc.save_every == 0
            if due_eval or done or due_save:
                state.train_seconds += time.perf_counter() - started
                if due_eval or done:
                    stop = run_evaluation() or done
                    evaluated_at = state.global_step
                if due_save or (tc.save_every == "eval" and due_eval) or stop:
                    state.finished = stop
                    save_checkpoint(accelerator, run_dir, state.global_step, tc.keep_checkpoints)
                    saved_at = state.global_step
                model.train()
                started = time.perf_counter()
            if stop:
                break
        else:
            state.train_seconds += time.perf_counter() - started
            state.epoch += 1
            state.batches_in_epoch = 0
            if tc.eval_every == "epoch" and evaluated_at != state.global_step:
                stop = run_evaluation()
                evaluated_at = state.global_step
                if tc.save_every == "eval" or stop:
                    state.finished = stop
                    save_checkpoint(accelerator, run_dir, state.global_step, tc.keep_checkpoints)
                    saved_at = state.global_step
    progress.close()
    if eval_dl is None and main:
        save_weights(run_dir / BEST_DIR, assembly, accelerator.unwrap_model(model))
    if saved_at != state.global_step:
        state.finished = True
        save_checkpoint(accelerator, run_dir, state.global_step, tc.keep_checkpoints)
    accelerator.wait_for_everyone()
    summary = RunSummary.create(
        config, assembly.strategy.describe(), best_metric, state, trainable, total, accelerator.num_processes, weights_size(run_dir),
        peak_memory_mb(accelerator.device),
    )
    if main:
        summary.save(run_dir)
        task.adopt_evaluation(summary.eval)
        write_run_files(run_dir, config, task.state_dict())
        breakdown = task.report(summary.eval) if summary.eval else None
        if breakdown:
            print(breakdown)
        if type(assembly.strategy).write_artifacts is not Strategy.write_artifacts:  # plots of the best weights
            _, best = load_trained(run_dir, config)
            best.strategy.write_artifacts(best.model, run_dir)
    accelerator.end_training()
    return summary
