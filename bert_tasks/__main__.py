"""``python -m bert_tasks`` (and ``accelerate launch -m bert_tasks``) run the CLI."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
