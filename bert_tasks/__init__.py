"""bert_tasks: fine-tune BERT-style encoders from one YAML recipe.

    import bert_tasks
    config = bert_tasks.load_config("recipes/demo.yaml", ["strategy.name=last_n"])
    summary = bert_tasks.train(config)
    model = bert_tasks.load(summary.run_dir)
    model.predict(["The kettle boils fast and quietly."])
    bert_tasks.publish(summary.run_dir, "published/demo")      # Hub-ready folder + model card
    bert_tasks.compare("compare/demo")                          # strategies side by side
"""
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .config import RunConfig, load_config
from .errors import BertTasksError
from .predictor import Predictor, load
from .registry import STRATEGIES, TASKS
from .summary import RunSummary
from .training import train


def compare(recipe: Union[str, Path], overrides: Sequence[str] = ()) -> Path:
    """Run (or continue) a comparison recipe; returns its report folder (see bert_tasks.comparison;
    imported on use, so `import bert_tasks` stays light)."""
    from .comparison import compare as run

    return run(recipe, tuple(overrides))


def publish(run_dir: Union[str, Path], out: Union[str, Path], license: str = "apache-2.0", push: Optional[str] = None) -> Any:
    """Write a Hub-ready folder for a run's best model (see bert_tasks.publishing)."""
    from .publishing import publish as write

    return write(Path(run_dir), Path(out), license=license, push=push)


__all__ = ["RunConfig", "load_config", "train", "load", "compare", "publish", "Predictor", "RunSummary", "TASKS", "STRATEGIES", "BertTasksError"]
__version__ = "0.1.0"
