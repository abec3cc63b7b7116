"""schema/extension_runner.py steps strawberry's extension hooks itself on the
per-event path; these pin that it does what strawberry's runner does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner

from schema.extension_runner import LeanExtensionsRunner, OneStreamHook


class Recorder(SchemaExtension):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_stream_result(self, result: object) -> Iterator[None]:
        self.seen.append(f"before {result}")
        try:
            yield
        except KeyError:
            self.seen.append("swallowed")
            return
        finally:
            self.seen.append("finally")
        self.seen.append(f"after {result}")


class Reporter(Recorder):
    def get_results(self) -> dict:
        return {"reported": True}


class Context:
    extensions_results = {"fromContext": 1}


async def _stream(runner: SchemaExtensionsRunner, results: list, fail_with=None) -> None:
    for result in results:
        async with runner.on_stream_result(result):
            if fail_with is not None:
                raise fail_with


@pytest.mark.parametrize("fail_with", [None, KeyError("k"), ValueError("v")])
async def test_stream_result_hooks_run_as_strawberry_runs_them(fail_with):
    ours, theirs = Recorder(), Recorder()
    outcomes = []
    for extension, runner_class in ((ours, LeanExtensionsRunner), (theirs, SchemaExtensionsRunner)):
        runner = runner_class(execution_context=None, extensions=[extension])
        try:
            await _stream(runner, [1, 2], fail_with)
            outcomes.append("completed")
        except Exception as raised:
            outcomes.append(repr(raised))
    assert ours.seen == theirs.seen
    assert outcomes[0] == outcomes[1]


def test_one_generator_hook_is_stepped_directly():
    runner = LeanExtensionsRunner(execution_context=None, extensions=[Recorder()])
    assert isinstance(runner.on_stream_result(1), OneStreamHook)
    two = LeanExtensionsRunner(execution_context=None, extensions=[Recorder(), Recorder()])
    assert not isinstance(two.on_stream_result(1), OneStreamHook)


async def test_a_hook_that_yields_twice_is_refused():
    class Twice(SchemaExtension):
        def on_stream_result(self, result: object) -> Iterator[None]:
            yield
            yield

    runner = LeanExtensionsRunner(execution_context=None, extensions=[Twice()])
    with pytest.raises(RuntimeError, match="yielded twice"):
        await _stream(runner, [1])


async def test_extension_results_are_asked_of_extensions_that_give_them():
    quiet = LeanExtensionsRunner(execution_context=None, extensions=[Recorder()])
    assert await quiet.get_extensions_results(Context) == {"fromContext": 1}
    reporting = LeanExtensionsRunner(execution_context=None, extensions=[Recorder(), Reporter()])
    assert await reporting.get_extensions_results(Context) == {"reported": True, "fromContext": 1}
