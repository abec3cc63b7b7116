"""Blocks as clients see them; built once from the registry and cached."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from app.blocks.base import BlockCostType as DomainBlockCostType

BlockCostType = strawberry.enum(DomainBlockCostType, name="BlockCostType")


@strawberry.type
class BlockCost:
    amount: int
    type: BlockCostType
    filter: JSON = strawberry.field(
        description="Input values for which this cost applies; empty means always."
    )


@strawberry.type
class Block:
    id: strawberry.ID
    name: str
    description: str
    categories: list[str]
    input_schema: JSON = strawberry.field(description="JSON Schema of the input pins.")
    output_schema: JSON = strawberry.field(description="JSON Schema of the output pins.")
    static_output: bool = strawberry.field(
        description="Outputs stay available to every later run of the sink (static links)."
    )
    disabled: bool
    costs: list[BlockCost]
    sensitive: bool = strawberry.field(
        description=(
            "Reaches outside the run (network, files, other graphs, paid models): with the "
            "graph's humanInTheLoopSafeMode on, each run of its nodes waits for approval."
        )
    )

    @classmethod
    def from_descriptor(cls, d: dict) -> Block:
        """From the cached JSON descriptor (see app.services.blocks.BlockCatalog);
        one object per descriptor, shared by every node that shows it."""
        return _block_for(id(d), d)

    @classmethod
    def _build(cls, d: dict) -> Block:
        return cls(
            id=d["id"],
            name=d["name"],
            description=d["description"],
            categories=d["categories"],
            input_schema=d["inputSchema"],
            output_schema=d["outputSchema"],
            static_output=d["staticOutput"],
            disabled=d["disabled"],
            sensitive=d.get("sensitive", False),
            costs=[
                BlockCost(
                    amount=c["amount"], type=DomainBlockCostType(c["type"]), filter=c["filter"]
                )
                for c in d["costs"]
            ],
        )


_BUILT: dict[int, tuple[dict, Block]] = {}


def _block_for(key: int, d: dict) -> Block:
    # Keyed by the descriptor object; the pair keeps it alive so the id stays unique.
    found = _BUILT.get(key)
    if found is None or found[0] is not d:
        found = (d, Block._build(d))
        _BUILT[key] = found
    return found[1]


@strawberry.type
class BlockOutput:
    outputs: JSON = strawberry.field(
        description="Output pin name to the list of values it produced, in order."
    )
    cost: int
