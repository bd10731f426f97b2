"""Sequence-to-sequence generation (summarisation, ...): a source text in, a target text out.

The model is an encoder-decoder warm-started from encoder checkpoints (BERT2BERT, see
``seq2seq_network``) or a native seq2seq checkpoint (T5, BART). Sources are the
``data.text_column``, targets the ``data.label_column``. Training is teacher-forced
cross-entropy over target tokens (padding ignored); evaluation reports the loss and
generates (greedy or beam search) for ROUGE, sacreBLEU and the mean generated length.
Example::

    bert-tasks train samsum_bert2bert
    bert-tasks train samsum_bert2bert task.freeze_encoder=true task.num_beams=4
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..batching import IGNORE_INDEX, EncodedDataset, collate_tokens, pad_sequences
from ..config import ModelConfig
from ..data import Split
from ..errors import ConfigError
from ..ranges import check_range
from ..generation_metrics import GENERATION_METRICS, generation_scores
from ..model import TaskModel
from ..registry import TASKS
from ..sanity import MIN_ROWS, Baseline, collapsed, first_line
from .base import Task
from .seq2seq_network import (
    Seq2SeqHead,
    SpecialTokens,
    decoder_stack,
    is_native_seq2seq,
    load_network,
    network_from_config,
    set_special_tokens,
    share_encoder_weights,
)


@dataclass(frozen=True)
class Seq2SeqConfig:
    name: str = "seq2seq"
    max_source_length: int = 256  # source tokens (with special tokens); longer sources are truncated
    max_target_length: int = 64  # target tokens the decoder learns (with the end token)
    decoder_checkpoint: Optional[str] = None  # warm start: the decoder's checkpoint; None: model.checkpoint
    share_weights: bool = False  # warm start: the decoder reuses the encoder's weights (BERT2BERT-share)
    freeze_encoder: bool = False  # True: the pretrained encoder stays fixed and only the decoder side learns
    encoder_lr_scale: float = 1.0  # joint training: the encoder learns at this multiple of train.learning_rate
    label_smoothing: float = 0.0  # training loss only; the evaluation loss is the plain negative log-likelihood
    # generation, at evaluation and prediction
    num_beams: int = 1  # 1: greedy search
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    length_penalty: float = 1.0  # beam search: > 1 favours longer outputs, < 1 shorter ones
    no_repeat_ngram_size: int = 0  # > 0: never repeat an n-gram of this size
    metrics: Optional[list[str]] = None  # None: rougeL, rouge1, rouge2, rougeLsum, bleu, gen_len (the first picks the best checkpoint)

    def validate(self) -> None:
        if self.max_source_length < 4 or self.max_target_length < 2:
            raise ConfigError(f"task.max_source_length / max_target_length: at least 4 / 2, got {self.max_source_length} / {self.max_target_length}")
        if self.share_weights and self.freeze_encoder:
            raise ConfigError("task.share_weights and task.freeze_encoder: a shared decoder would be frozen too; choose one")
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.min_new_tokens < 0 or self.no_repeat_ngram_size < 0:
            raise ConfigError("task: num_beams and max_new_tokens must be 1 or more, min_new_tokens and no_repeat_ngram_size 0 or more")
        check_range("task.encoder_lr_scale", self.encoder_lr_scale, 0, low_open=True, hint="use freeze_encoder to keep it fixed")
        check_range("task.label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_range("task.length_penalty", self.length_penalty)
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(f"task.min_new_tokens={self.min_new_tokens}: must not exceed task.max_new_tokens={self.max_new_tokens}")
        for name in self.metrics or ():
            if name not in GENERATION_METRICS:
                raise ConfigError(f"task.metrics: {name!r} is not a generation metric; choose from {', '.join(GENERATION_METRICS)}")


@TASKS.register("seq2seq", Seq2SeqConfig)
class Seq2Seq(Task):
    outputs_vary_in_length = True  # generated token ids
    pipeline_tag = "text2text-generation"
    decoding_keys = ("num_beams", "max_new_tokens", "min_new_tokens", "length_penalty", "no_repeat_ngram_size")

    def __init__(self, config: Seq2SeqConfig, data: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(config, data, tokenizer)
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if end is None or tokenizer.pad_token_id is None:
            raise ConfigError("model.checkpoint: its tokenizer has no end-of-sequence ([SEP] / </s>) or padding token; seq2seq needs both")
        self.end_id, self.pad_id = int(end), int(tokenizer.pad_token_id)

    # -- what the data defines ------------------------------------------------
    def fit(self, train: Split) -> None:
        self._check_columns(train, with_targets=True)

    def state_dict(self) -> dict[str, Any]:
        return {"end_token_id": self.end_id, "pad_token_id": self.pad_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.end_id, self.pad_id = int(state["end_token_id"]), int(state["pad_token_id"])

    def position_lengths(self) -> dict[str, tuple[int, int]]:
        """Sources fill the encoder; targets (start token + all but the last) and generations (start token + new ones) the decoder."""
        cfg = self.config
        return {"task.max_source_length": (cfg.max_source_length, cfg.max_source_length),
                "task.max_target_length": (cfg.max_target_length, cfg.max_target_length),
                "task.max_new_tokens": (cfg.max_new_tokens, cfg.max_new_tokens + 1)}

    # -- examples to tensors ----------------------------------------------------
    def _check_columns(self, split: Split, with_targets: bool) -> None:
        columns, keys = [self.data.text_column], ["data.text_column"]
        if with_targets:
            columns.append(self.data.label_column)
            keys.append("data.label_column")
        split.require_columns(columns, keys)

    def encode(self, split: Split, with_labels: bool = True) -> EncodedDataset:
        self._check_columns(split, with_labels)
        sources = split.texts(self.data.text_column, allow_empty=False)
        encoded = self.tokenizer(sources, truncation=True, max_length=self.config.max_source_length)
        columns: dict[str, list] = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        meta: dict[str, Any] = {}
        if with_labels:
            targets = split.texts(self.data.label_column, allow_empty=False)
            pieces = self.tokenizer(targets, add_special_tokens=False, truncation=True, max_length=self.config.max_target_length - 1)["input_ids"]
            columns["labels"] = [ids + [self.end_id] for ids in pieces]  # y_1 .. y_n [SEP]: the decoder learns to stop
            meta["references"] = targets  # scored untruncated, as published figures are
            meta["sources"] = sources  # for the first-line baseline (sanity.py)
        return EncodedDataset(columns, meta=meta)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Sources as usual; targets twice: pad-filled decoder inputs (with a mask) and IGNORE-filled labels."""
        batch = collate_tokens(features, self.pad_id)
        if "labels" in features[0]:
            targets = [f["labels"] for f in features]
            batch["inputs"]["target_ids"] = pad_sequences(targets, self.pad_id)  # Shape: [batch, tgt]
            batch["inputs"]["target_mask"] = pad_sequences([[1] * len(t) for t in targets], 0)
            batch["labels"] = pad_sequences(targets, IGNORE_INDEX)  # padding does not count in the loss
        return batch

    # -- the model ----------------------------------------------------------------
    def special_tokens(self, network_config: PretrainedConfig) -> SpecialTokens:
        """Native checkpoints keep their own start token; a warm-started decoder starts from [CLS] (or <s>)."""
        if is_native_seq2seq(network_config) and network_config.decoder_start_token_id is not None:
            start = network_config.decoder_start_token_id
        else:
            start = self.tokenizer.cls_token_id if self.tokenizer.cls_token_id is not None else self.tokenizer.bos_token_id
        if start is None:
            raise ConfigError("model.checkpoint: neither the model config nor the tokenizer names a decoder start token ([CLS] / <s>)")
        return SpecialTokens(start=int(start), pad=self.pad_id, end=self.end_id)

    def build_model(self, model: ModelConfig, network_config: Optional[PretrainedConfig] = None) -> TaskModel:
        fresh: list[str] = []
        if network_config is None:
            network, fresh = load_network(model.checkpoint, model.revision, model.dropout, self.config.decoder_checkpoint)
        else:
            network = network_from_config(network_config)
        if self.config.share_weights:
            if is_native_seq2seq(network.config):
                raise ConfigError(f"task.share_weights: {network.config.model_type} checkpoints are already one encoder-decoder; leave it false")
            share_encoder_weights(network)
        set_special_tokens(network, self.special_tokens(network.config))
        names = {name for name, _ in network.named_parameters()}
        return TaskModel(
            network,
            Seq2SeqHead(network),
            decoder=decoder_stack(network),
            new_parameters=tuple(f"backbone.{name}" for name in fresh if name in names),
            encoder_trains=not self.config.freeze_encoder,
            encoder_lr_scale=self.config.encoder_lr_scale,
        )

    # -- publishing: the network is itself a stock model (EncoderDecoderModel, T5/BART...ForConditionalGeneration)
    def to_stock(self, model: TaskModel) -> tuple[Optional[PreTrainedModel], str]:
        outside = [name for name in model.state_dict() if not name.startswith("backbone.")]
        if outside:
            return None, f"the strategy adds modules transformers does not have ({outside[0]}, ...)"
        return model.backbone, "the encoder-decoder is a stock transformers model"

    def from_stock(self, stock: dict[str, torch.Tensor], model: TaskModel) -> dict[str, torch.Tensor]:
        return {f"backbone.{name}": tensor for name, tensor in stock.items()}

    def stock_usage(self, name: str, class_name: str) -> str:
        return (
            f"from transformers import AutoTokenizer, {class_name}\n\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")\n'
            f'model = {class_name}.from_pretrained("{name}")\n'
            'inputs = tokenizer(["A dialogue to summarise ..."], return_tensors="pt")\n'
            "print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))\n"
        )

    def loss_sum(self, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Shape: outputs [batch, tgt, vocab], labels [batch, tgt]
        summed = F.cross_entropy(
            outputs.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=self.config.label_smoothing
        )
        return summed, (labels != IGNORE_INDEX).sum().float()

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        summed, count = self.loss_sum(outputs, labels)
        return summed / count.clamp(min=1.0)

    @property
    def generation_options(self) -> dict[str, Any]:
        cfg = self.config
        options = {"num_beams": cfg.num_beams, "max_new_tokens": cfg.max_new_tokens, "min_new_tokens": cfg.min_new_tokens, "length_penalty": cfg.length_penalty}
        if cfg.no_repeat_ngram_size:
            options["no_repeat_ngram_size"] = cfg.no_repeat_ngram_size
        if cfg.num_beams > 1:
            options["early_stopping"] = True
        return options

    def predict_step(self, model: TaskModel, batch: dict[str, Any]) -> torch.Tensor:
        """Each row: [its summed target NLL, its target tokens, the generated ids ...] as float32
        (the loss sums make the evaluation loss exact on any number of processes).
        Shape: -> [batch, 2 + generated]"""
        inputs = batch["inputs"]
        hidden = model.encode(**model.encoder_inputs(inputs))  # Shape: [batch, src, hidden]
        rows = inputs["input_ids"].shape[0]
        nll, count = torch.zeros(rows, device=hidden.device), torch.zeros(rows, device=hidden.device)
        if "labels" in batch:
            logits = model.head(hidden, inputs["attention_mask"], inputs["target_ids"], inputs["target_mask"])  # Shape: [batch, tgt, vocab]
            labels = batch["labels"]
            per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")  # Shape: [batch, tgt]
            nll, count = per_token.sum(1), (labels != IGNORE_INDEX).sum(1).float()
        generated = model.head.generate(hidden, inputs["attention_mask"], **self.generation_options)  # Shape: [batch, 1 + new]
        return torch.cat([nll[:, None], count[:, None], generated[:, 1:].float()], dim=1)

    def evaluation_loss(self, outputs: list[np.ndarray], data: EncodedDataset) -> float:
        nll = sum(float(row[0]) for row in outputs)
        tokens = sum(float(row[1]) for row in outputs)
        return nll / max(tokens, 1.0)

    # -- outputs to answers ----------------------------------------------------
    def _generated(self, outputs: list[np.ndarray]) -> tuple[list[str], list[int]]:
        """Texts and lengths (in tokens, without special tokens) of the generated ids of every row."""
        special = set(self.tokenizer.all_special_ids)
        texts, lengths = [], []
        for row in outputs:
            ids = [int(v) for v in row[2:] if v >= 0]  # negative: padding added across processes
            if self.end_id in ids:
                ids = ids[: ids.index(self.end_id)]
            content = [i for i in ids if i not in special]
            texts.append(self.tokenizer.decode(content, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip())
            lengths.append(len(content))
        return texts, lengths

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(self.config.metrics) if self.config.metrics else ("rougeL", "rouge1", "rouge2", "rougeLsum", "bleu", "gen_len")

    def compute_metrics(self, outputs: list[np.ndarray], data: EncodedDataset) -> dict[str, float]:
        texts, lengths = self._generated(outputs)
        return generation_scores(texts, data.meta["references"], lengths, self.metric_names)

    def baseline(self, data: EncodedDataset) -> Optional[Baseline]:
        """Each source's first line (a dialogue's first turn; one-line texts: their first sentence), as the lead
        baseline of summarisation."""
        sources = data.meta.get("sources")
        if not sources:
            return None
        firsts = [first_line(text) for text in sources]
        lengths = [len(ids) for ids in self.tokenizer(firsts, add_special_tokens=False)["input_ids"]]
        return Baseline("the first line of each source", generation_scores(firsts, data.meta["references"], lengths, self.metric_names))

    def collapse(self, outputs: list[np.ndarray], data: EncodedDataset) -> Optional[str]:
        texts, _ = self._generated(outputs)
        if len(texts) >= MIN_ROWS and not any(texts):
            return f"every one of the {len(texts):,} generated texts is empty"
        return collapsed(texts, "generated texts")

    def format_predictions(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[dict[str, Any]]:
        texts, _ = self._generated(outputs)
        return [{"generated_text": text} for text in texts]

    # -- prediction input ---------------------------------------------------------
    def examples_to_split(self, examples: Iterable[Union[str, dict]]) -> Split:
        """Source texts, or dicts with the run's source column."""
        column = self.data.text_column
        rows = [e.get(column) if isinstance(e, dict) else e for e in examples]
        return Split("input", datasets.Dataset.from_dict({column: rows}), "input")

    def prepare_input(self, split: Split) -> Split:
        """Files may name the source column 'text' or 'source' instead of the training name."""
        return split.adopt_column(self.data.text_column, ("text", "source"))
