"""Every recipe parses with its script's own parser: no unknown keys, no wrong types."""

import importlib.util
from pathlib import Path

import pytest
from trl import TrlParser

from commentrank.prepare import PrepConfig

from conftest import ROOT

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def script_parser(name: str) -> TrlParser:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_parser()


def parser_for(recipe: Path) -> TrlParser:
    kind = recipe.stem.split("_")[0]
    if kind == "data":
        return TrlParser([PrepConfig])
    if kind in ("reward", "sft"):
        return script_parser(kind)
    raise AssertionError(f"{recipe}: recipe names start with data, reward or sft")


def test_there_are_recipes():
    assert any(r.stem.startswith("reward") for r in RECIPES) and any(r.stem.startswith("data") for r in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(r.relative_to(ROOT / "recipes")) for r in RECIPES])
def test_recipe_parses(recipe):
    parsed = parser_for(recipe).parse_args_and_config(["--config", str(recipe)])
    assert parsed and all(obj is not None for obj in parsed)
