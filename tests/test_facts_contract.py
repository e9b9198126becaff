"""Every llmtune fact keeps the contract its callers rely on."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from conftest import run_command

import llmtune.facts
from llmtune.facts.probe import LOCALE, LlmtuneFact


def all_facts() -> list[type[LlmtuneFact]]:
    found = []
    for info in pkgutil.iter_modules(llmtune.facts.__path__):
        module = importlib.import_module(f"llmtune.facts.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            ours = cls.__module__ == module.__name__
            if ours and issubclass(cls, LlmtuneFact) and cls is not LlmtuneFact:
                found.append(cls)
    return found


@pytest.mark.parametrize("fact", all_facts(), ids=lambda f: f.__name__)
def test_fact_runs_in_c_locale_exits_0_and_parses_here(fact: type[LlmtuneFact]) -> None:
    command = fact().command()
    assert command.startswith(LOCALE), "facts read tools' output in the C locale"
    if fact.exclusive:
        return  # load probes run for real in their own tests
    lines = run_command(command)  # asserts exit status 0
    value = fact().process(lines)
    assert value == fact().process(lines)  # pure: same lines, same value
    assert fact().process([]) == fact().default()
