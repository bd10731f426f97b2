"""bert_tasks: fine-tune BERT-style encoders from one YAML recipe.

    import bert_tasks
    config = bert_tasks.load_config("recipes/demo.yaml", ["strategy.name=last_n"])
    summary = bert_tasks.train(config)
    model = bert_tasks.load(summary.run_dir)
    model.predict(["The kettle boils fast and quietly."])
"""
from .config import RunConfig, load_config
from .errors import BertTasksError
from .predictor import Predictor, load
from .registry import STRATEGIES, TASKS
from .summary import RunSummary
from .training import train

__all__ = ["RunConfig", "load_config", "train", "load", "Predictor", "RunSummary", "TASKS", "STRATEGIES", "BertTasksError"]
__version__ = "0.1.0"
