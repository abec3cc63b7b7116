"""Query depth limit: fields nested deeper than MAX_QUERY_DEPTH are refused
during validation, before any resolver runs (SEMANTICS.md §11).

Depth counts field levels from the root (`{ me { id } }` is 2), following
fragments; introspection fields are not counted.
"""

from __future__ import annotations

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)

from app.errors import ErrorCode


def depth_limit_rule(max_depth: int) -> type[ValidationRule]:
    class DepthLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_args) -> None:
            fragments = {
                d.name.value: d
                for d in self.context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            depth = _depth(node.selection_set, fragments, {}, frozenset())
            if depth > max_depth:
                self.report_error(
                    GraphQLError(
                        f"Query depth {depth} exceeds the limit of {max_depth}",
                        node,
                        extensions={"code": ErrorCode.QUERY_TOO_COMPLEX.value},
                    )
                )

    return DepthLimit


def _depth(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    known: dict[str, int],
    visiting: frozenset[str],
) -> int:
    if selection_set is None:
        return 0
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value.startswith("__"):
                continue
            depth = 1 + _depth(selection.selection_set, fragments, known, visiting)
        elif isinstance(selection, InlineFragmentNode):
            depth = _depth(selection.selection_set, fragments, known, visiting)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            # Cycles and unknown fragments are reported by graphql's own rules.
            if name in visiting or name not in fragments:
                continue
            if name not in known:
                # Memoised, so many spreads of one fragment cost one walk.
                known[name] = _depth(
                    fragments[name].selection_set, fragments, known, visiting | {name}
                )
            depth = known[name]
        else:
            continue
        deepest = max(deepest, depth)
    return deepest
