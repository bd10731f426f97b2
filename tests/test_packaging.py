"""What a wheel install relies on: every module and recipe in the wheel, recipes found as package
data, and an `import bert_tasks` (and `bert-tasks recipes`) that loads no deep-learning stack."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bert_tasks
from bert_tasks.config import list_recipes, load_config, recipes_dir, resolve_recipe
from bert_tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "accelerate", "datasets", "peft")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_import_bert_tasks_loads_no_deep_learning_stack():
    done = _python(f"import bert_tasks, sys; loaded = [m for m in {HEAVY!r} if m in sys.modules]; assert not loaded, loaded")
    assert done.returncode == 0, done.stderr


def test_listing_recipes_loads_no_deep_learning_stack():
    done = _python(f"import sys; from bert_tasks.cli import main; assert main(['recipes']) == 0; "
                   f"loaded = [m for m in {HEAVY!r} if m in sys.modules]; assert not loaded, loaded")
    assert done.returncode == 0, done.stderr
    assert "glue/sst2" in done.stdout


def test_lazy_public_names_are_the_real_objects():
    from bert_tasks import predictor, training

    assert bert_tasks.train is training.train
    assert bert_tasks.load is predictor.load and bert_tasks.Predictor is predictor.Predictor
    assert set(bert_tasks.__all__) <= set(dir(bert_tasks))
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        bert_tasks.trian


def test_recipes_are_package_data():
    assert recipes_dir() == Path(bert_tasks.__file__).resolve().parent / "recipes"
    names = {str(path.relative_to(recipes_dir()).with_suffix("")) for path in list_recipes()}
    assert {"demo", "glue/sst2", "compare/demo", "conll2003", "squad", "squad_v2", "samsum_bert2bert"} <= names


def test_recipe_names_paths_and_the_old_recipes_folder_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here
    bundled = recipes_dir() / "demo.yaml"
    assert resolve_recipe("demo") == resolve_recipe("demo.yaml") == bundled
    assert resolve_recipe("recipes/demo.yaml") == resolve_recipe("recipes/demo") == bundled
    assert resolve_recipe("recipes/glue/sst2.yaml") == recipes_dir() / "glue" / "sst2.yaml"
    own = tmp_path / "recipes" / "demo.yaml"  # a file of the user's own always wins
    own.parent.mkdir()
    own.write_text("task: {name: classification}\ntrain: {epochs: 2}\n")
    assert resolve_recipe("recipes/demo.yaml") == Path("recipes/demo.yaml")
    assert load_config("recipes/demo.yaml").train.epochs == 2
    with pytest.raises(ConfigError, match="recipe recipes/nothing.yaml: no such file"):
        resolve_recipe("recipes/nothing.yaml")


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are tracked")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [name for name in listed.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


def test_wheel_holds_every_module_recipe_and_data_file(tmp_path):
    tracked = _tracked_files()
    source = tmp_path / "src"  # a clean copy: no stale build/ folder of the checkout can fill gaps
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("bert_tasks-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {name for name in tracked if name.startswith("bert_tasks/") and name.endswith((".py", ".yaml", ".csv"))}
    assert wanted - shipped == set()
    assert {"bert_tasks/tasks/__init__.py", "bert_tasks/strategies/__init__.py", "bert_tasks/recipes/glue/sst2.yaml"} <= shipped
    entry_points = next(name for name in shipped if name.endswith(".dist-info/entry_points.txt"))
    assert "bert-tasks = bert_tasks.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
