"""earmark.api is a facade: every verb passes exactly its own arguments, by name, to the function doing the work."""

import ast
import inspect
from importlib import import_module
from pathlib import Path

import pytest

from earmark import api

API_SOURCE = Path(api.__file__).read_text()


def _verbs() -> list[tuple[str, str]]:
    """(verb, "module:function") for every public function in api.py, read from its `_call` line."""
    verbs = []
    for node in ast.parse(API_SOURCE).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            call = node.body[-1].value
            assert isinstance(call, ast.Call) and call.func.id == "_call", f"api.{node.name} does more than delegate"
            verbs.append((node.name, call.args[0].value))
    return verbs


def test_every_verb_is_one_delegating_line():
    verbs = _verbs()
    assert {name for name, _ in verbs} >= {"prepare", "train", "evaluate", "predict", "cv", "tune", "export", "serve"}
    for node in ast.parse(API_SOURCE).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            body = [statement for statement in node.body
                    if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))]
            assert len(body) == 1, f"api.{node.name} has {len(body)} statements besides its docstring"


@pytest.mark.parametrize(("verb", "target"), _verbs())
def test_verb_parameters_are_its_targets(verb, target):
    module, function = target.split(":")
    delegate = getattr(import_module(module), function)
    facade = inspect.signature(getattr(api, verb)).parameters
    accepted = inspect.signature(delegate).parameters
    assert set(facade) <= set(accepted), f"api.{verb} passes {set(facade) - set(accepted)} that {target} lacks"
    missing_required = {name for name, parameter in accepted.items()
                        if parameter.default is inspect.Parameter.empty and name not in facade}
    assert not missing_required, f"{target} requires {missing_required}, which api.{verb} does not take"
    for name, parameter in facade.items():
        if parameter.default is not inspect.Parameter.empty and accepted[name].default is not inspect.Parameter.empty:
            assert parameter.default == accepted[name].default, f"api.{verb}({name}=) default differs from {target}"
