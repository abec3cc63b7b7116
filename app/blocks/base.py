"""What a block is: a class with a stable id, pydantic input/output models
(which give the JSON Schemas of its pins), costs, and an async generator `run`.

A block family is one module in this package; the registry finds every
`Block` subclass in it at start. To add a block, subclass `Block` in the
family module it belongs to (or a new module) and give it a fresh UUID.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from app.blocks.credentials import (
    CredentialsField,
    CredentialsSecret,
    redact,
    redact_text,
    secret_forms,
)

if TYPE_CHECKING:
    from app.settings import Settings

ERROR_PIN = "error"


class BlockCategory(StrEnum):
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"
    BASIC = "BASIC"
    TEXT = "TEXT"
    LOGIC = "LOGIC"
    DATA = "DATA"
    TIME = "TIME"
    HTTP = "HTTP"
    AI = "AI"
    AGENT = "AGENT"


class BlockCostType(StrEnum):
    RUN = "RUN"  # amount per run
    BYTE = "BYTE"  # amount per byte of input
    SECOND = "SECOND"  # amount per second of run time


@dataclass(frozen=True)
class BlockCost:
    amount: int
    type: BlockCostType = BlockCostType.RUN
    # Input values for which this cost applies; empty means always.
    filter: Mapping[str, Any] = field(default_factory=dict)


class BlockInput(BaseModel):
    """Base of every block's input model: unknown pins are mistakes."""

    model_config = ConfigDict(extra="forbid")


class BlockOutput(BaseModel):
    """Base of every block's output model: one field per output pin."""

    error: str = ""


@dataclass
class BlockRunContext:
    """What a running block may use besides its input."""

    settings: Settings
    user_id: uuid.UUID
    graph_id: uuid.UUID | None = None
    execution_id: uuid.UUID | None = None
    node_id: uuid.UUID | None = None
    node_execution_id: uuid.UUID | None = None
    # Runs another graph as a child (set by the engine; SubGraph needs it).
    run_sub_graph: Any = None
    # This block's credentials fields -> the run's decrypted credentials for them.
    credentials: Mapping[str, CredentialsSecret] = field(default_factory=dict)
    # A person's decision on this node run (set by the engine; HumanReview needs it).
    review: ReviewDecision | None = None

    def secrets(self) -> list[str]:
        """What a block must never yield or report: its credentials' secrets."""
        return secret_forms(self.credentials.values())


@dataclass(frozen=True)
class ReviewDecision:
    """What a person decided on a node run that waited for review."""

    approved: bool
    # The (possibly edited) data when approved; None: as shown.
    data: Any = None
    # The reviewer's message (the reason, when rejected).
    message: str | None = None


class BlockError(Exception):
    """A failure the block reports on its `error` pin; the node fails with this message."""


class Block:
    id: ClassVar[uuid.UUID]
    name: ClassVar[str]
    description: ClassVar[str]
    categories: ClassVar[tuple[BlockCategory, ...]] = (BlockCategory.BASIC,)
    Input: ClassVar[type[BlockInput]]
    Output: ClassVar[type[BlockOutput]]
    costs: ClassVar[tuple[BlockCost, ...]] = ()
    # Outputs stay available to every later run of the sink (static links).
    static_output: ClassVar[bool] = False
    # Credentials a run supplies by id (credentialsInputs), field name -> what it needs.
    # A graph's credentialsInputSchema joins these (app/blocks/credentials.py).
    credentials_fields: ClassVar[dict[str, CredentialsField]] = {}
    # May yield more than one value on a pin per run, so the nodes below it may run
    # more than once (ForEach); estimateExecution cannot bound what they cost.
    yields_many: ClassVar[bool] = False

    def run_seconds_range(self, input_data: Mapping[str, Any]) -> tuple[float, float | None]:
        """How long a run takes given the inputs known before the run: (at least,
        at most or None when unknown). Estimates of per-second costs use it."""
        return 0.0, None

    # Reaches outside the run (network, files, other graphs, paid models): in a graph
    # with humanInTheLoopSafeMode on, each of its node runs waits for a person first.
    sensitive: ClassVar[bool] = False

    def is_disabled(self, settings: Settings) -> bool:
        """Blocks that need an outside service are disabled when it is not configured."""
        return False

    def input_schema(self) -> dict[str, Any]:
        return self.Input.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        return self.Output.model_json_schema()

    def input_pins(self) -> frozenset[str]:
        return frozenset(self.Input.model_fields)

    def output_pins(self) -> frozenset[str]:
        return frozenset(self.Output.model_fields)

    def required_input_pins(self) -> frozenset[str]:
        return frozenset(
            name for name, info in self.Input.model_fields.items() if info.is_required()
        )

    def has_dynamic_output_pins(self) -> bool:
        """True for blocks whose output pins depend on their input (SubGraph)."""
        return False

    def validate_input(self, data: Mapping[str, Any]) -> BlockInput:
        """The typed input, or InvalidBlockInput naming each bad pin."""
        try:
            return self.Input.model_validate(dict(data))
        except ValidationError as exc:
            raise InvalidBlockInput(pin_errors(exc)) from exc

    async def run(
        self, input: Any, context: BlockRunContext
    ) -> AsyncIterator[tuple[str, Any]]:  # pragma: no cover - every block overrides
        raise NotImplementedError
        yield  # makes this an async generator for type checkers


async def without_secrets(
    outputs: AsyncIterator[tuple[str, Any]], secrets: list[str]
) -> AsyncIterator[tuple[str, Any]]:
    """A block's outputs and failures with its credentials' secrets replaced: a server
    may echo a key back (in a body or an error), and what a block yields is stored,
    published and passed on."""
    try:
        async for pin, value in outputs:
            yield pin, redact(value, secrets)
    except BlockError as exc:
        raise BlockError(redact_text(str(exc), secrets)) from None
    except Exception as exc:
        # Unexpected errors are logged with their traceback: never with a secret in it.
        if secrets:
            raise BlockError(redact_text(f"{type(exc).__name__}: {exc}", secrets)) from None
        raise


class InvalidBlockInput(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{pin}: {message}" for pin, message in errors.items()))
        self.errors = errors


def pin_errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic's errors as pin name -> message."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        pin = str(error["loc"][0]) if error["loc"] else "input"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "no such input pin"
        errors.setdefault(pin, message)
    return errors
