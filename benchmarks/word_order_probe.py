"""How much the embedded checkpoint's sentence representation cares about word order: evidence for why
CoLA (grammatical acceptability) stays low with all-MiniLM-L6-v2 while STS-B does well.

For every CoLA dev sentence: the cosine between its mean-pooled last-layer embedding and that of the
same words shuffled (same bag of words, mostly ungrammatical), against the cosine with another dev
sentence (different words). A model whose representation encodes syntax moves a sentence far when
its words are shuffled; a bag-of-words-like one barely moves it. Also per layer, since fine-tuning
can draw on every layer's [CLS] path, not only the last.

    python benchmarks/word_order_probe.py [--rows 1043]
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import DATA, ROOT  # noqa: E402

sys.path.insert(0, str(ROOT))
from cached_strategies import machine  # noqa: E402


def main() -> None:
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bert_tasks.backbone import resolve_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1043)
    args = parser.parse_args()
    path = DATA / "glue" / "cola" / "validation" / "0000.parquet"
    if not path.is_file():
        raise SystemExit(f"needs {path}")
    sentences = pq.read_table(path).column("sentence").to_pylist()[: args.rows]
    rng = random.Random(0)
    shuffled = []
    for sentence in sentences:
        words = sentence.split()
        for _ in range(10):  # a different order where there is one
            rng.shuffle(words)
            if " ".join(words) != sentence or len(set(words)) < 2:
                break
        shuffled.append(" ".join(words))
    others = sentences[1:] + sentences[:1]

    checkpoint = resolve_checkpoint("default")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint).eval()

    def embed(texts: list[str]) -> list[torch.Tensor]:
        """Mean-pooled hidden states of every layer (embeddings first), one (rows, hidden) tensor each."""
        layers: list[list[torch.Tensor]] = []
        for start in range(0, len(texts), 64):
            batch = tokenizer(texts[start:start + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.inference_mode():
                hidden = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].unsqueeze(-1).float()  # Shape: (batch, seq, 1)
            for index, states in enumerate(hidden):  # Shape: (batch, seq, hidden)
                pooled = (states * mask).sum(1) / mask.sum(1)  # Shape: (batch, hidden)
                if len(layers) <= index:
                    layers.append([])
                layers[index].append(pooled)
        return [torch.cat(parts) for parts in layers]

    original, scrambled, unrelated = embed(sentences), embed(shuffled), embed(others)
    print(f"machine: {machine()}")
    print(f"{len(sentences)} CoLA dev sentences; mean cosine of a sentence's mean-pooled embedding with")
    print("layer   its words shuffled   another sentence   gap")
    for index, (a, b, c) in enumerate(zip(original, scrambled, unrelated)):
        same_words = torch.nn.functional.cosine_similarity(a, b).mean().item()
        different = torch.nn.functional.cosine_similarity(a, c).mean().item()
        print(f"{'emb' if index == 0 else index:>5}   {same_words:18.3f}   {different:16.3f}   {same_words - different:5.3f}")


if __name__ == "__main__":
    main()
