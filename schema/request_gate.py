"""The request gate: the one schema extension every operation passes, over
HTTP and websockets alike (SEMANTICS.md §2 and §11).

Before strawberry parses anything it admits the request or refuses it:

1. per request: the operation name and variables must be storable text and
   values (no NUL, no lone surrogate, numbers that fit: app/storable.py);
2. per distinct query text, once, kept in a bounded cache (`DocumentGate`):
   its length (MAX_QUERY_LENGTH), the outline read from the text and measured against the limits
   (schema/document_outline.py, schema/document_measures.py), so a hostile
   document is refused before the costly parse and validation; then the
   parse, the literal check and graphql-core's validation;
3. per request again: a document with several operations needs an
   operationName; a mutation counts its root fields against the caller's
   rate limit.

A refusal is a pre-execution error: nothing resolves. The parsed document and
an empty error list are handed to strawberry, so it neither parses nor
validates again. On the way out every error gets its code (ErrorCodes), and
a result that outgrew MAX_RESPONSE_BYTES (schema/executor.py) is replaced by
that one error. One extension does all of it: each extension costs ~47 µs a
request even when idle (issue 14).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    NameNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    print_schema,
    specified_rules,
    validate,
)
from graphql import OperationType as NodeOperationType
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule
from strawberry.types.graphql import OperationType

from app.errors import AppError, bad_input
from app.settings import Settings
from app.storable import text_problem
from schema.document_measures import Limits, SchemaShape, measure
from schema.document_outline import QueryTooComplex, outline_of_ast, read_outline
from schema.executor import ResponseTooLarge
from schema.extensions import ErrorCodes
from schema.rate_limit import mutation_refusal
from schema.response_cache import answer_from_cache, cacheable_operations, keep
from schema.storable_values import literal_error, variables_error

# Distinct query texts whose analysis is kept: clients send the same few
# operations again and again; a flood of unique texts only evicts. Longer
# texts (large literal inputs) are analysed each time rather than held.
TEXTS_KEPT = 256
LONGEST_TEXT_KEPT = 32_768

MULTIPLE_OPERATIONS = "Must provide operation name if query contains multiple operations."


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one query text is, worked out once."""

    document: DocumentNode | None
    # Errors that refuse every request with this text (limits, syntax, validation).
    errors: tuple[GraphQLError, ...] = ()
    # Per operation in document order: (kind, name, root fields).
    operations: tuple[tuple[str, str | None, int], ...] = ()
    # Operations that may be answered from the `graphs` cache (schema/response_cache.py).
    cacheable: frozenset[str | None] = frozenset()


def _refusal(error: Exception) -> GraphQLError:
    if isinstance(error, GraphQLError):
        return error
    message = error.message if isinstance(error, AppError) else str(error)
    return GraphQLError(message, original_error=error)


class DocumentGate:
    """The analysis of query texts for one schema, cached per text."""

    def __init__(self, settings: Settings) -> None:
        self.limits = Limits(
            max_tokens=settings.MAX_TOKENS,
            max_depth=settings.MAX_QUERY_DEPTH,
            max_aliases=settings.MAX_ALIASES,
            max_fields_per_set=settings.MAX_FIELDS_PER_SELECTION_SET,
            max_repeated_fields=settings.MAX_REPEATED_FIELDS,
            max_fields=settings.MAX_FIELDS,
            max_nodes=settings.MAX_QUERY_NODES,
        )
        self.max_length = settings.MAX_QUERY_LENGTH
        self.hide_suggestions = not settings.GRAPHQL_EXPLORER
        rules = [*specified_rules, MaybeNullValidationRule, OneOfInputValidationRule]
        if not settings.GRAPHQL_EXPLORER:
            rules.append(NoSchemaIntrospectionCustomRule)
        self.rules = tuple(rules)
        self.schema: GraphQLSchema | None = None
        self.shape: SchemaShape | None = None
        self._schema_version: str | None = None
        self._kept: OrderedDict[str, Analysis] = OrderedDict()

    def bind(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        self.shape = SchemaShape(schema)

    @property
    def schema_version(self) -> str:
        """Part of the `graphs` cache's keys: another schema, other answers.
        Worked out on first use (the schema is finished after bind)."""
        if self._schema_version is None:
            assert self.schema is not None
            printed = print_schema(self.schema).encode()
            self._schema_version = hashlib.sha256(printed).hexdigest()[:16]
        return self._schema_version

    def analysis(self, text: str) -> Analysis:
        found = self._kept.get(text)
        if found is not None:
            self._kept.move_to_end(text)
            return found
        found = self._analyse(text)
        if len(text) <= LONGEST_TEXT_KEPT:
            self._kept[text] = found
            if len(self._kept) > TEXTS_KEPT:
                self._kept.popitem(last=False)
        return found

    def _analyse(self, text: str) -> Analysis:
        assert self.schema is not None and self.shape is not None
        if len(text) > self.max_length:
            # graphql-core reads text a character at a time in Python (~0.2 s
            # a megabyte) however few tokens it holds: comments, whitespace,
            # one long name. Large values belong in variables.
            refusal = QueryTooComplex(
                f"The query text is longer than {self.max_length} characters; "
                "send large values as variables"
            )
            return Analysis(None, (_refusal(refusal),))
        problem = text_problem(text)
        if problem:
            # graphql-core would quote the character back, which no encoder can write.
            return Analysis(None, (_refusal(bad_input(f"The query: {problem}")),))
        document = None
        try:
            outline = read_outline(text, self.limits.per_set)
            if outline is None:
                document = self._parse(text)
                outline = outline_of_ast(document)
            measures = measure(outline, self.limits, self.shape)
            if document is None:
                document = self._parse(text)
        except (AppError, GraphQLError) as error:
            return Analysis(document, (_refusal(error),))
        operations = tuple(
            (operation.kind, operation.name, fields)
            for operation, fields in zip(outline.operations, measures.root_fields, strict=True)
        )
        unstorable = literal_error(document)
        if unstorable is not None:
            return Analysis(document, (unstorable,), operations)
        errors = validate(self.schema, document, self.rules, hide_suggestions=self.hide_suggestions)
        cacheable = frozenset() if errors else cacheable_operations(document)
        return Analysis(document, tuple(errors), operations, cacheable)

    def _parse(self, text: str) -> DocumentNode:
        try:
            return parse(text, max_tokens=self.limits.max_tokens)
        except RecursionError as exc:
            raise QueryTooComplex("The document nests too deeply") from exc


class RequestGate(ErrorCodes):
    def __init__(self, gate: DocumentGate) -> None:
        super().__init__()
        self.gate = gate
        self.hide_suggestions = gate.hide_suggestions

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context
        self._cached_operation: tuple[str | None] | None = None
        refusal = await self._admit(context)
        if refusal is not None:
            context.pre_execution_errors = [refusal]
        if context.pre_execution_errors and context.graphql_document is None:
            context.graphql_document = _stand_in(context)
        miss = None
        if refusal is None and self._cached_operation is not None:
            miss = await answer_from_cache(
                context, self._cached_operation[0], self.gate.schema_version
            )
        yield
        if miss is not None:
            await keep(context, miss)
        self._present_result(context.result)

    def _present_result(self, result: Any) -> None:
        errors = getattr(result, "errors", None) if result is not None else None
        if errors:
            too_large = next((e for e in errors if _is_too_large(e)), None)
            if too_large is not None:
                # Nothing of a result that outgrew the limit is sent.
                result.data, result.errors = None, [too_large]
        super()._present_result(result)

    async def _admit(self, context: Any) -> GraphQLError | None:
        """None to let the operation run, else the error that refuses it. Leaves
        the document (parsed once per text) on the context either way."""
        text = context.query
        if not isinstance(text, str) or not text:
            return None  # strawberry answers "No GraphQL query found"
        name = getattr(context, "_provided_operation_name", None)
        if isinstance(name, str) and text_problem(name):
            return _refusal(bad_input(f"operationName: {text_problem(name)}"))
        unstorable = variables_error(context.variables or {})
        if unstorable is not None:
            return unstorable
        analysis = self.gate.analysis(text)
        context.graphql_document = analysis.document
        if analysis.errors:
            context.pre_execution_errors = list(analysis.errors)
            return None
        operations = analysis.operations
        if name is None and len(operations) > 1:
            return _refusal(bad_input(MULTIPLE_OPERATIONS))
        chosen = next((op for op in operations if name is None or op[1] == name), None)
        if (
            chosen is not None
            and chosen[0] == "mutation"
            and OperationType.MUTATION in context.allowed_operations
        ):
            limited = await mutation_refusal(context.context, chosen[2])
            if limited is not None:
                return _refusal(limited)
        if chosen is not None and chosen[1] in analysis.cacheable:
            self._cached_operation = (chosen[1],)
        # Parsed and validated above: strawberry skips both.
        context.pre_execution_errors = []
        return None


def _is_too_large(error: GraphQLError) -> bool:
    original = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    return isinstance(original, ResponseTooLarge)


def _stand_in(context: Any) -> DocumentNode:
    """An empty operation of a type this transport allows, for strawberry to
    carry a refusal of a text that was never parsed."""
    allowed = context.allowed_operations
    kind = OperationType.QUERY if OperationType.QUERY in allowed else next(iter(allowed))
    name = getattr(context, "_provided_operation_name", None)
    return DocumentNode(
        definitions=(
            OperationDefinitionNode(
                operation=NodeOperationType(kind.value),
                name=NameNode(value=name) if isinstance(name, str) else None,
                variable_definitions=(),
                directives=(),
                selection_set=SelectionSetNode(selections=()),
            ),
        )
    )
