"""The docstring examples of the product's modules run as doctests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import forwarder
import podhose_redrive
import transform_lambda

MODULES = sorted(
    info.name
    for package in (forwarder, transform_lambda, podhose_redrive)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def test_the_transform_and_the_wire_format_have_examples() -> None:
    attempted = {
        name: doctest.testmod(importlib.import_module(name)).attempted
        for name in ("transform_lambda.transform", "transform_lambda.wire_decoder",
                     "forwarder.wire_encoder")
    }  # fmt: skip
    assert all(attempted.values()), attempted
