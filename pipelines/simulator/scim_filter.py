"""The subset of SCIM filters (RFC 7644, section 3.4.2.2) that Qlik's users listing accepts.

Grammar, with case-insensitive keywords, operators and attribute names:

    filter     = or_expr
    or_expr    = and_expr *("or" and_expr)
    and_expr   = term *("and" term)
    term       = "(" filter ")" / attribute ("eq" / "co") string

Qlik allows `eq` on the attributes in EQ_ATTRIBUTES and `co` on those in CO_ATTRIBUTES, and
requires every status condition to sit in one group that is ANDed with the rest of the filter.
Values are JSON strings and compare case-insensitively.
"""

import json
import re
from dataclasses import dataclass

EQ_ATTRIBUTES = (
    "id",
    "subject",
    "name",
    "email",
    "status",
    "clientId",
    "assignedRoles.id",
    "assignedRoles.name",
    "assignedGroups.id",
    "assignedGroupsAssignedRoles.name",
    "assignedScopes",
)
CO_ATTRIBUTES = ("name", "email", "subject")

_CANONICAL_ATTRIBUTES = {name.lower(): name for name in EQ_ATTRIBUTES}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<paren>[()])
        |(?P<string>"(?:[^"\\]|\\.)*")
        |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)
        |(?P<other>\S+)
    )""",
    re.VERBOSE,
)


class FilterError(ValueError):
    """A filter the simulator cannot parse or Qlik does not accept."""


@dataclass(frozen=True)
class Comparison:
    """One `attribute operator "value"` condition."""

    attribute: str
    operator: str
    value: str


@dataclass(frozen=True)
class Logical:
    """Conditions joined by one logical operator, `and` or `or`."""

    operator: str
    operands: tuple["Comparison | Logical", ...]


Node = Comparison | Logical


def parse_filter(text: str) -> Node:
    """Parse a filter, or raise FilterError saying what is wrong and where."""
    parser = _Parser(_tokenize(text))
    node = parser.parse_or()
    if parser.peek() is not None:
        raise FilterError(f"Unexpected {parser.peek()[1]!r} after a complete condition")

    _check_status_grouping(node)
    return node


def matches(node: Node, user: dict) -> bool:
    """Return whether a user satisfies the filter."""
    if isinstance(node, Logical):
        results = (matches(operand, user) for operand in node.operands)
        return all(results) if node.operator == "and" else any(results)

    expected = node.value.casefold()
    values = [str(value).casefold() for value in _attribute_values(user, node.attribute)]
    if node.operator == "eq":
        return expected in values

    return any(expected in value for value in values)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "other":
            raise FilterError(f'Unexpected {match.group(kind)!r}; quote values with "')
        tokens.append((kind, match.group(kind)))

    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, description: str) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise FilterError(f"Filter ends where {description} was expected")
        self.position += 1
        return token

    def parse_or(self) -> Node:
        return self._parse_joined("or", self.parse_and)

    def parse_and(self) -> Node:
        return self._parse_joined("and", self.parse_term)

    def _parse_joined(self, keyword: str, parse_operand) -> Node:
        operands = [parse_operand()]
        while self._next_is_keyword(keyword):
            self.position += 1
            operands.append(parse_operand())

        return operands[0] if len(operands) == 1 else Logical(keyword, tuple(operands))

    def parse_term(self) -> Node:
        kind, text = self.take("a condition")
        if (kind, text) == ("paren", "("):
            node = self.parse_or()
            if self.take("')'") != ("paren", ")"):
                raise FilterError("Missing ')' after a parenthesised condition")
            return node
        if kind != "word":
            raise FilterError(f"Expected an attribute name, got {text!r}")

        attribute = _canonical_attribute(text)
        operator = self.take(f"an operator after {text!r}")[1].lower()
        if operator not in ("eq", "co"):
            raise FilterError(f"Unsupported operator {operator!r}; the users API supports eq, co")
        if operator == "co" and attribute not in CO_ATTRIBUTES:
            raise FilterError(
                f"'co' is not supported on {attribute!r}; use it on name, email or subject"
            )

        value_kind, value_text = self.take(f"a value after {operator!r}")
        if value_kind != "string":
            raise FilterError(f"Expected a quoted string after {operator!r}, got {value_text!r}")

        try:
            value = json.loads(value_text)
        except json.JSONDecodeError as error:
            raise FilterError(f"Invalid string {value_text}: {error.msg}") from None

        return Comparison(attribute, operator, value)

    def _next_is_keyword(self, keyword: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "word" and token[1].lower() == keyword


def _canonical_attribute(name: str) -> str:
    try:
        return _CANONICAL_ATTRIBUTES[name.lower()]
    except KeyError:
        raise FilterError(
            f"Unsupported attribute {name!r}; filterable attributes: {', '.join(EQ_ATTRIBUTES)}"
        ) from None


def _attribute_values(user: dict, attribute: str) -> list:
    if attribute == "assignedGroupsAssignedRoles.name":
        groups = user.get("assignedGroups") or []
        return [role.get("name") for group in groups for role in group.get("assignedRoles") or []]

    if "." in attribute:
        collection, key = attribute.split(".", 1)
        return [item.get(key) for item in user.get(collection) or [] if isinstance(item, dict)]

    value = user.get(attribute)
    if value is None:
        return []

    return value if isinstance(value, list) else [value]


def _check_status_grouping(node: Node) -> None:
    """Reject status conditions outside one group ANDed with the rest, as Qlik does."""
    for conjunct in _conjuncts(node):
        attributes = _attributes_in(conjunct)
        if "status" in attributes and attributes != {"status"}:
            raise FilterError(
                "Status conditions must be grouped together and ANDed with the rest of the "
                'filter, e.g. name co "a" and (status eq "active" or status eq "invited")'
            )


def _conjuncts(node: Node) -> list[Node]:
    if isinstance(node, Logical) and node.operator == "and":
        return [conjunct for operand in node.operands for conjunct in _conjuncts(operand)]

    return [node]


def _attributes_in(node: Node) -> set[str]:
    if isinstance(node, Comparison):
        return {node.attribute}

    return set().union(*(_attributes_in(operand) for operand in node.operands))
