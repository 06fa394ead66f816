"""The docstring examples of the product's modules run as doctests: every module with an
example (``>>>`` in its source) is a parameter, and each must attempt at least one."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import devstack
import forwarder
import podhose_redrive
import podhose_wire
import transform_lambda


def _has_examples(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name
    return ">>>" in Path(spec.origin).read_text(encoding="utf-8")


MODULES = sorted(
    info.name
    for package in (forwarder, transform_lambda, podhose_redrive, podhose_wire, devstack)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    if not info.name.endswith("__main__") and _has_examples(info.name)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has `>>>` but no docstring example ran"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def test_the_transform_and_the_wire_format_have_examples() -> None:
    attempted = {
        name: doctest.testmod(importlib.import_module(name)).attempted
        for name in ("transform_lambda.transform", "transform_lambda.wire_decoder",
                     "forwarder.wire_encoder", "podhose_wire.header", "podhose_wire.columns",
                     "podhose_wire.kubelet_name", "podhose_wire.put_batch")
    }  # fmt: skip
    assert all(attempted.values()), attempted
