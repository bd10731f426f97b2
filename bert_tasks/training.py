"""The one training loop (Accelerate): every task and strategy trains through ``train``.

Read ``train`` top to bottom: claim (lock) the run folder and pick the checkpoint to resume
from, read and check the data, only then clear what an earlier run left, build the model, make
loaders/optimiser/schedule and ``prepare`` them once, resume, loop over epochs with
``accelerator.accumulate`` (evaluating, keeping the best weights, saving resumable
checkpoints as configured), and write the summary.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from . import atomic_files
from .assembly import Assembly, build_model, prepare_task
from .arrow_store import encode_training_split
from .streaming import StreamedBatches, training_stream
from .batching import EncodedDataset, LengthGroupedBatches
from .checkpointing import Resumable, TrainerState, find_resumable, load_checkpoint, save_checkpoint, step_folders, step_name
from .config import RunConfig, TrainConfig
from .devices import pins_batches
from .errors import BertTasksError, ConfigError
from .eval_sets import EvalSet, eval_sets, headline, resolve_best_metric, results_of, with_prefix
from .evaluation import eval_loader, evaluate, task_reports
from .frozen.plan import attach, plan_frozen
from .metrics import greater_is_better
from .optim import make_optimizer
from .parameters import format_report, parameter_report
from .progress import Progress
from .embedding_gradient import reuse_embedding_gradients
from .fast_dropout import use_fast_dropout
from .step_timing import StepTimer, format_breakdown
from .run_guard import claim_run_dir, clear_previous_run, remove_if_unused, remove_leftovers
from .rundir import BEST_DIR, CHECKPOINTS_DIR, FROZEN_CACHE_FILE, PARAMETERS_FILE, SUMMARY_FILE, append_metrics, keep_metrics_until, load_trained, save_weights, weights_size, write_run_files
from .sanity import baseline_of
from .sharding import configure_deepspeed, fit_wrap_classes, gathered_weights, is_sharded, models_built_whole, sharding_kind
from .runtime import check_distributed_setup, make_accelerator, peak_memory_mb, precision_choice, same_on_every_process
from .strategies.base import Strategy
from .summary import RunSummary
from .tasks.base import Task


def train(config: RunConfig) -> RunSummary:
    """Train, evaluate and save one run; returns its summary (also in RUN_DIR/summary.json)."""
    accelerator = make_accelerator(config.train, config.run_dir)
    check_distributed_setup(accelerator)
    with claimed_run_dir(config, accelerator) as checkpoint:
        set_seed(config.train.seed)
        check_batch_sizes(config.train, accelerator)
        task, train_data, eval_data, best_metric = read_and_check_data(config)
        if checkpoint is None and accelerator.is_main_process:
            clear_previous_run(config.run_dir)  # only now: the new run's config and data are valid
            write_run_files(config.run_dir, config, task.state_dict())
        with models_built_whole(accelerator):
            assembly = build_model(config, task, task.tokenizer)
        loop = TrainingLoop(config, accelerator, assembly, train_data, eval_data, best_metric)
        if checkpoint is not None:
            loop.resume_from(checkpoint)
        loop.announce(resumed=checkpoint is not None)
        loop.run()
        return finish(config, accelerator, loop)


# ---- the steps of train() -----------------------------------------------------------------------

@contextmanager
def claimed_run_dir(config: RunConfig, accelerator: Accelerator) -> Iterator[Optional[Path]]:
    """The run folder checked, marked and locked by the main process for the whole training; yields
    the checkpoint to resume from (None: start at step 0). Every process learns the same answer."""
    lock, checkpoint, failure = None, None, None
    created_here = not config.run_dir.exists()
    if accelerator.is_main_process:
        try:
            lock = claim_run_dir(config)
            remove_leftovers(config.run_dir)
            checkpoint = choose_checkpoint(config) if config.train.resume else None
        except BertTasksError as error:
            failure = error
    code = -2 if failure else (-1 if checkpoint is None else int(checkpoint.name.split("-")[1]))
    code = same_on_every_process(accelerator, code)
    try:
        if failure is not None:
            raise failure
        if code == -2:
            raise BertTasksError(f"{config.run_dir}: the main process could not open the run folder (its error says why)")
        yield None if code < 0 else config.run_dir / CHECKPOINTS_DIR / step_name(code)
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
            if created_here:  # bad data or config found before anything was written: leave no trace
                remove_if_unused(config.run_dir)
        raise
    finally:
        if lock is not None:
            lock.release()


def choose_checkpoint(config: RunConfig) -> Optional[Path]:
    """The newest intact checkpoint; without one, a run that never finished starts again from step 0."""
    run_dir = config.run_dir
    checkpoint = find_resumable(run_dir)
    if checkpoint is None and (run_dir / SUMMARY_FILE).is_file() and not config.output.overwrite:
        raise BertTasksError(f"{run_dir}: train.resume=true but no intact checkpoint is left of this finished run; "
                             "replace it with output.overwrite=true")
    if checkpoint is None and step_folders(run_dir):
        print(f"bert-tasks: {run_dir}: no intact checkpoint to resume from; training again from step 0", file=sys.stderr)
    return checkpoint


def check_batch_sizes(tc: TrainConfig, accelerator: Accelerator) -> None:
    if tc.batch_size % accelerator.num_processes or tc.eval_batch_size % accelerator.num_processes:
        raise ConfigError(f"train.batch_size={tc.batch_size} and eval_batch_size={tc.eval_batch_size} must divide by the {accelerator.num_processes} processes")


def read_and_check_data(config: RunConfig) -> tuple[Task, EncodedDataset, list[tuple[EvalSet, EncodedDataset]], str]:
    """Task fitted on the training data, the training data and every evaluation set encoded (bad
    rows fail here, before any weights load), and the metric that picks the best evaluation."""
    task, splits = prepare_task(config)
    train_data = training_stream(config, task) if config.data.streaming else encode_training_split(task, splits["train"], config.data)
    sets = eval_sets(config.data)
    eval_data = [(eval_set, task.encode(splits[eval_set.split_key])) for eval_set in sets]
    best_metric = resolve_best_metric(config.train.best_metric, sets, task.metric_names)
    return task, train_data, eval_data, best_metric


class TrainingLoop:
    """The prepared pieces of one training and the loop over them."""

    def __init__(self, config: RunConfig, accelerator: Accelerator, assembly: Assembly,
                 train_data: EncodedDataset, eval_data: list[tuple[EvalSet, EncodedDataset]], best_metric: str) -> None:
        tc = self.tc = config.train
        self.config, self.accelerator, self.assembly, self.task = config, accelerator, assembly, assembly.task
        self.run_dir, self.main = config.run_dir, accelerator.is_main_process
        self.train_data, self.eval_data, self.best_metric = train_data, eval_data, best_metric
        self.precision = precision_choice(tc)  # what make_accelerator gave the Accelerator, with its reason
        # Own generator: a DataLoader otherwise draws its seed from the global RNG, which would shift
        # dropout masks after a resume (the iterator is re-created mid-epoch). Saved with checkpoints.
        self.loader_generator = torch.Generator().manual_seed(tc.seed)
        pin = pins_batches(accelerator.device)  # with the Accelerator's non_blocking copies (runtime.py): no stall per batch
        if isinstance(train_data, StreamedBatches):  # batches made as the stream is read (streaming.py)
            self.sampler: Union[LengthGroupedBatches, StreamedBatches] = train_data
            train_loader = DataLoader(train_data, batch_size=tc.batch_size, drop_last=True, collate_fn=self.task.collate, generator=self.loader_generator,
                                      pin_memory=pin)
        else:
            self.sampler = LengthGroupedBatches(train_data.lengths, tc.batch_size, shuffle=True, seed=tc.seed, group_by_length=tc.group_by_length)
            train_loader = DataLoader(train_data, batch_sampler=self.sampler, collate_fn=self.task.collate, num_workers=tc.num_workers, generator=self.loader_generator,
                                      pin_memory=pin)
        loaders = [train_loader] + [eval_loader(data, self.task, tc.eval_batch_size, tc.num_workers, pin) for _, data in eval_data]
        self.steps_per_epoch = math.ceil(len(self.sampler) / tc.gradient_accumulation_steps)
        epochs = 1 if isinstance(train_data, StreamedBatches) else tc.epochs  # a stream's "epoch" is train.max_steps
        self.total_steps = max(1, min(math.ceil(self.steps_per_epoch * epochs), tc.max_steps or math.inf))
        if tc.gradient_checkpointing:
            enable_gradient_checkpointing(assembly.model)
        if tc.fast_dropout:
            use_fast_dropout(assembly.model)
        if tc.reuse_host_memory and accelerator.device.type == "cpu":
            reuse_embedding_gradients(assembly.model)  # the 47 MB word-embedding gradient, mapped afresh each step otherwise
        optimizer = make_optimizer(assembly.model, tc, loss_scaling=self.precision.precision == "fp16")
        if sharding_kind(accelerator) == "fsdp":
            fit_wrap_classes(accelerator, assembly.model)
        elif sharding_kind(accelerator) == "deepspeed":
            configure_deepspeed(accelerator, tc.batch_size, tc.max_grad_norm)
        scheduler = get_linear_schedule_with_warmup(optimizer, tc.warmup_steps or math.ceil(tc.warmup_ratio * self.total_steps), self.total_steps)
        self.model, self.optimizer, self.scheduler, *loaders = accelerator.prepare(assembly.model, optimizer, scheduler, *loaders)
        self.train_loader, self.eval_loaders = loaders[0], loaders[1:]
        if isinstance(train_data, StreamedBatches):  # Accelerate's loader for a stream drops the generator: each new
            self.train_loader.generator = self.loader_generator  # iterator would draw its seed from the global RNG (dropout)
        self.trainable_params = [p for p in self.model.parameters() if p.requires_grad]
        self.deepspeed = sharding_kind(accelerator) == "deepspeed"
        network = accelerator.unwrap_model(self.model)
        self.frozen = plan_frozen(tc, accelerator, network, self.task, assembly.strategy, train_data, [(s.split_key, data) for s, data in eval_data])
        network.frozen_cut = self.frozen.cut if self.frozen.cached else None
        self.frozen_modules = self.frozen.frozen_modules(network)
        self.state = TrainerState()
        self.epoch_loader_rng = self.loader_generator.get_state()  # as the current epoch began
        self.evaluated_at = self.saved_at = -1
        self.first_step = 0  # the step this process started at (a resumed run times only its own steps)
        self.running_loss, self.running_batches = torch.zeros((), device=accelerator.device), 0  # Shape: []
        self.progress: Optional[Progress] = None
        self.timer = StepTimer(tc.step_breakdown, accelerator.device)
        self.baselines: dict[str, dict[str, Any]] = {}  # per evaluation set: the trivial baseline's name and scores
        self.warnings: list[str] = []  # what the last evaluation found the model has not learned

    @property
    def resumable(self) -> Resumable:
        return Resumable(self.model, self.optimizer, self.scheduler, self.loader_generator)

    def resume_from(self, checkpoint: Path) -> None:
        """Continue exactly where ``checkpoint`` left off; records the killed run wrote after it go."""
        self.state, values = load_checkpoint(self.accelerator, checkpoint, self.resumable)
        self.epoch_loader_rng = self.loader_generator.get_state()
        loss = torch.tensor(values.get("running_loss", 0.0), dtype=torch.float32, device=self.accelerator.device)  # Shape: []
        self.running_loss, self.running_batches = loss, int(values.get("running_batches", 0))
        self.evaluated_at = self.saved_at = self.first_step = self.state.global_step
        if self.main:
            keep_metrics_until(self.run_dir, self.state.global_step)
            write_run_files(self.run_dir, self.config, self.task.state_dict())

    def announce(self, resumed: bool) -> None:
        """Parameter counts (printed and in parameters.json), trackers, and the 'start' record."""
        report = parameter_report(self.accelerator.unwrap_model(self.model))
        self.trainable, self.total = report["trainable"], report["total"]
        tc = self.tc
        if self.main:
            atomic_files.write_json(self.run_dir / PARAMETERS_FILE, report)
            atomic_files.write_json(self.run_dir / FROZEN_CACHE_FILE, self.frozen.record)
            print(format_report(report))
            print(f"bert-tasks: precision {self.precision.label} ({self.precision.reason})", file=sys.stderr)
            for eval_set, data in self.eval_data:  # what a model that learned nothing would score (sanity.py)
                baseline = baseline_of(self.task, data)
                if baseline is not None:
                    self.baselines[eval_set.label] = {"name": baseline.name, **baseline.scores}
                    print(f"bert-tasks: {eval_set.label}: trivial baseline, {baseline.describe(self.task.metric_names)}", file=sys.stderr)
        if tc.log_with:
            self.accelerator.init_trackers(self.run_dir.name, config={"learning_rate": tc.learning_rate, "batch_size": tc.batch_size, "strategy": self.assembly.strategy.describe()})
        if self.main and not resumed:
            append_metrics(self.run_dir, {"event": "start", "best_metric": self.best_metric, "trainable_parameters": self.trainable, "total_parameters": self.total,
                                          "train_examples": None if isinstance(self.train_data, StreamedBatches) else len(self.train_data), "total_steps": self.total_steps, "processes": self.accelerator.num_processes,
                                          "sharded": is_sharded(self.accelerator), "frozen_cache": self.frozen.cached, "frozen_cut": self.frozen.record.get("cut"),
                                          "precision": self.precision.precision, "precision_reason": self.precision.reason})

    def run(self) -> None:
        state = self.state
        self.progress = Progress(self.run_dir.name, self.total_steps, state.global_step, state.samples_seen, enabled=self.accelerator.is_local_main_process)
        stop = state.finished or state.global_step >= self.total_steps
        while not stop:
            stop = self.train_epoch()
        self.progress.close()
        if not self.eval_loaders:
            self.save_best()
        if self.saved_at != state.global_step:
            state.finished = True
            self.save_checkpoint()

    def train_epoch(self) -> bool:
        """One pass over the training data (the rest of one, after a resume); True: stop training."""
        tc, state = self.tc, self.state
        self.sampler.use_epoch(state.epoch)
        self.task.start_epoch(state.epoch, tc.seed)
        if state.batches_in_epoch == 0:
            self.epoch_loader_rng = self.loader_generator.get_state()
        loader = self.accelerator.skip_first_batches(self.train_loader, state.batches_in_epoch) if state.batches_in_epoch else self.train_loader
        self.train_mode()
        started = time.perf_counter()
        self.timer.restart()
        for batch in loader:
            self.timer.mark("data")
            self.train_micro_batch(batch)
            if not self.accelerator.sync_gradients:
                continue
            state.global_step += 1
            self.log_training()
            self.timer.mark("other")
            done = state.global_step >= self.total_steps
            due_eval = tc.eval_every != "epoch" and state.global_step % tc.eval_every == 0
            due_save = tc.save_every != "eval" and state.global_step % tc.save_every == 0
            if due_eval or done or due_save:
                state.train_seconds += time.perf_counter() - started
                stop = self.evaluate_and_checkpoint(evaluate=due_eval or done, save=due_save or (tc.save_every == "eval" and due_eval), done=done)
                if stop:
                    return True
                self.train_mode()
                started = time.perf_counter()
                self.timer.restart()
        state.train_seconds += time.perf_counter() - started
        state.epoch += 1
        state.batches_in_epoch = 0
        if tc.eval_every == "epoch" and self.evaluated_at != state.global_step:
            return self.evaluate_and_checkpoint(evaluate=True, save=tc.save_every == "eval", done=False)
        return False

    def train_mode(self) -> None:
        """Training mode, but for the frozen part when it runs without dropout (cached, or frozen_dropout=false)."""
        self.model.train()
        for module in self.frozen_modules:
            module.eval()

    def train_micro_batch(self, batch: dict[str, Any]) -> None:
        """Forward and backward on one micro-batch; the optimiser steps on accumulation boundaries."""
        accelerator, state = self.accelerator, self.state
        attach(batch, self.frozen.train, accelerator.device)
        with accelerator.accumulate(self.model):
            outputs, labels = self.model(**batch["inputs"]), batch["labels"]
            real = self.sampler.real_rows(state.batches_in_epoch, accelerator.process_index, accelerator.num_processes)
            summed, count = self.task.loss_sum(outputs[:real], labels[:real]) if real != 0 else self.task.loss_sum(outputs, labels)
            if real == 0:  # a share made only of copies: zero loss, but every parameter in the graph (DDP)
                summed, count = summed * 0.0, torch.zeros_like(count)
            # the mean over the items of all processes' batches (DDP averages gradients, hence * processes);
            # a task with several losses (masked LM + NSP) gives one sum and one count per loss
            if accelerator.num_processes > 1:
                count = accelerator.reduce(count, reduction="sum") / accelerator.num_processes
            loss = (summed / count.clamp(min=1.0)).sum()  # Shape: []
            self.timer.mark("forward")
            accelerator.backward(loss)
            self.timer.mark("backward")
            if accelerator.sync_gradients and self.tc.max_grad_norm > 0 and not self.deepspeed:  # DeepSpeed clips inside its step
                accelerator.clip_grad_norm_(self.trainable_params, self.tc.max_grad_norm)
            self.timer.mark("clip")
            self.optimizer.step()
            self.scheduler.step()
            self.timer.mark("optimizer")
            self.optimizer.zero_grad(set_to_none=True)
            self.timer.mark("zero_grad")
        self.running_loss += loss.detach().float()
        self.running_batches += 1
        state.samples_seen += self.sampler.rows_in_batch(state.batches_in_epoch)
        state.batches_in_epoch += 1

    def log_training(self) -> None:
        """Every ``log_every`` steps (and the last): the mean loss since the last record."""
        step = self.state.global_step
        if not (step % self.tc.log_every == 0 or step == self.total_steps):
            self.progress.step(step, self.state.samples_seen)
            return
        mean_loss = self.accelerator.reduce(self.running_loss.clone(), reduction="mean").item() / self.running_batches
        schedule = getattr(self.scheduler, "scheduler", self.scheduler)  # the LambdaLR inside Accelerate's wrapper
        learning_rate = self.tc.learning_rate * schedule.lr_lambdas[0](schedule.last_epoch)  # at train.learning_rate (groups may scale it)
        if self.main:
            append_metrics(self.run_dir, {"event": "train", "step": step, "loss": mean_loss, "learning_rate": learning_rate})
        self.accelerator.log({"train/loss": mean_loss, "train/learning_rate": learning_rate}, step=step)
        self.progress.step(step, self.state.samples_seen, loss=mean_loss, learning_rate=learning_rate)
        self.running_loss, self.running_batches = torch.zeros((), device=self.accelerator.device), 0

    def evaluate_and_checkpoint(self, evaluate: bool, save: bool, done: bool) -> bool:
        """The one place a training evaluates and checkpoints; True when training should stop."""
        stop = done
        if evaluate:
            stop = self.evaluate() or done
            self.evaluated_at = self.state.global_step
        if save or stop:
            self.state.finished = stop
            self.save_checkpoint()
        return stop

    def evaluate(self) -> bool:
        """Evaluate, keep the best weights; True when early stopping says stop."""
        if not self.eval_loaders:
            return False
        state, accelerator = self.state, self.accelerator
        results: dict[str, float] = {}
        warnings: list[str] = []
        for (eval_set, data), loader in zip(self.eval_data, self.eval_loaders):
            notes: list[str] = []
            scores = evaluate(accelerator, self.model, loader, self.task, data, self.frozen.evaluation.get(eval_set.split_key), notes)
            results.update(with_prefix(scores, eval_set))
            warnings.extend(f"{eval_set.label}: {note}" for note in notes)
        self.warnings = warnings
        value = results[self.best_metric]
        better = state.best_value is None or (value > state.best_value if greater_is_better(self.best_metric) else value < state.best_value)
        if better:
            state.best_value, state.best_step, state.best_metrics = value, state.global_step, results
            state.evals_without_improvement = 0
            self.save_best()
        else:
            state.evals_without_improvement += 1
        record = {"event": "eval", "step": state.global_step, "epoch": round(state.global_step / self.steps_per_epoch, 3),
                  "train_seconds": round(state.train_seconds, 3), **results}
        if self.main:
            append_metrics(self.run_dir, {**record, **({"warnings": warnings} if warnings else {})})
            shown = {k: v for k, v in headline(record, [s for s, _ in self.eval_data]).items() if k != "train_seconds"}  # breakdowns stay in metrics.jsonl
            self.progress.note(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
            for warning in warnings:
                self.progress.note(f"bert-tasks: warning: {warning}")
        accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=state.global_step)
        accelerator.wait_for_everyone()
        patience = self.tc.early_stopping_patience
        return patience > 0 and state.evals_without_improvement >= patience

    def save_best(self) -> None:
        """The current weights as best/ (every process calls: a sharded model is gathered first)."""
        whole = gathered_weights(self.accelerator, self.model) if is_sharded(self.accelerator) else None
        if self.main:
            save_weights(self.run_dir / BEST_DIR, self.assembly, self.accelerator.unwrap_model(self.model), whole)

    def save_checkpoint(self) -> None:
        running = {"running_loss": self.running_loss.item(), "running_batches": self.running_batches}  # so the next loss record is exact
        save_checkpoint(self.accelerator, self.run_dir, self.state, self.resumable, self.epoch_loader_rng, running, self.tc.keep_checkpoints)
        self.saved_at = self.state.global_step


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """``train.gradient_checkpointing``: every transformers network inside the model (the encoder; an
    encoder-decoder's both halves) keeps only each layer's inputs and recomputes the rest in backward."""
    networks = [m for m in model.modules() if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing]
    if not networks:
        raise ConfigError("train.gradient_checkpointing=true: this model's network does not support it (transformers' supports_gradient_checkpointing)")
    for network in networks:
        enable = getattr(network, "activation_checkpointing_enable", None) or network.gradient_checkpointing_enable  # the name before transformers 5.x
        enable({"use_reentrant": False})  # non-reentrant: works when the layers' inputs need no gradient (frozen embeddings)


def finish(config: RunConfig, accelerator: Accelerator, loop: TrainingLoop) -> RunSummary:
    """summary.json, the task's report, the strategy's plots of the best weights; ends the trackers."""
    run_dir, task, strategy = config.run_dir, loop.task, loop.assembly.strategy
    accelerator.wait_for_everyone()
    loop.frozen.estimate_uncached(loop.state.train_seconds, loop.state.samples_seen / max(len(loop.train_data), 1))
    if accelerator.is_main_process:
        atomic_files.write_json(run_dir / FROZEN_CACHE_FILE, loop.frozen.record)
    summary = RunSummary.create(
        config, strategy.describe(), loop.best_metric, loop.state, loop.trainable, loop.total, accelerator.num_processes,
        weights_size(run_dir), peak_memory_mb(accelerator.device), loop.frozen.record, loop.precision,
        loop.timer.per_step_ms(loop.state.global_step - loop.first_step), loop.baselines, loop.warnings,
    )
    if accelerator.is_main_process:
        summary.save(run_dir)
        if summary.step_breakdown_ms:
            print(f"bert-tasks: {format_breakdown(summary.step_breakdown_ms)}", file=sys.stderr)
        task.adopt_evaluation(results_of(summary.eval, summary.best_metric, summary.eval_sets))  # what the set picking the best tuned
        write_run_files(run_dir, config, task.state_dict())
        breakdown = task_reports(task, summary.eval, summary.eval_sets)
        if breakdown:
            print(breakdown)
        if type(strategy).write_artifacts is not Strategy.write_artifacts:  # plots of the best weights
            with models_built_whole(accelerator):
                _, best = load_trained(run_dir, config)
            best.strategy.write_artifacts(best.model, run_dir)
    accelerator.end_training()
    return summary

