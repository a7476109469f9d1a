"""Factor expressions (issue 23 §1): `[features.expressions] mom5 = "$close / Ref($close, 5) - 1"`.

A Qlib-compatible subset, parsed by a small recursive-descent parser into an AST of `Node`s,
checked once (names, arity, windows, causality) and compiled to the compiled rolling kernels every
built-in family uses (features/expression_eval.py). Hand-written rather than a parsing library:
the grammar is five precedence levels, the errors must be one line with the offending term and a
close match (which a generic parser's messages are not), and this keeps recipe loading free of a
new dependency. Pure Python: recipe validation parses without loading numba.

Grammar (Python's precedence, as Qlib evaluates expressions with Python):

    expr       := additive (("<" | "<=" | ">" | ">=" | "==" | "!=") additive)?   (no chaining)
    additive   := term (("+" | "-") term)*
    term       := unary (("*" | "/") unary)*
    unary      := ("-" | "+") unary | primary
    primary    := NUMBER | "$" NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Causality by construction: every operator reads bars at or before t; the only way to name a later
bar is a negative offset (`Ref($close, -1)`), which is refused when the recipe loads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from quant_cli.errors import RecipeError, shown, suggest

# Fields of canonical bars (`vwap` is derived from high/low/close when absent); any other `$name`
# is read from the store's column of that name (e.g. alternative data), or the feature is skipped.
KNOWN_FIELDS = ("open", "high", "low", "close", "volume", "vwap", "adj_close")
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
# A feature column named like a key or a bar column would be confused with it (a frame of bars
# whose columns include every feature name is taken for feature rows).
TEXT_COLUMNS = ("symbol", "ts", "sector")  # keys and labels of canonical bars, never numbers
RESERVED_NAMES = (*TEXT_COLUMNS, *KNOWN_FIELDS)
MAX_LENGTH = 2_000  # characters of one expression
MAX_DEPTH = 50  # nesting of parentheses, calls and unary minus (the parser recurses)
MAX_HEIGHT = 100  # levels of the parsed tree (evaluating and printing it recurses)
MAX_WINDOW = 100_000  # bars, as features.windows


@dataclass(frozen=True)
class Op:
    """An operator's signature: each argument is "x" (a series), "w" (a window, integer >= min_window),
    "n" (an offset in bars, integer >= 0) or "q" (a number in [0, 1])."""

    args: tuple[str, ...]
    doc: str
    min_window: int = 1

    @property
    def usage(self) -> str:
        names = {"x": "x", "w": "N", "n": "N", "q": "q"}
        series = iter(("x", "y", "z"))
        return ", ".join(next(series) if a == "x" else names[a] for a in self.args)


_ROLL = ("x", "w")
OPS: dict[str, Op] = {
    "Ref": Op(("x", "n"), "x N bars ago"),
    "Delta": Op(("x", "n"), "x - Ref(x, N)"),
    "Mean": Op(_ROLL, "mean of the last N values"),
    "Sum": Op(_ROLL, "sum of the last N values"),
    "Std": Op(_ROLL, "sample standard deviation (ddof=1) of the last N values", 2),
    "Var": Op(_ROLL, "sample variance (ddof=1) of the last N values", 2),
    "Skew": Op(_ROLL, "bias-corrected sample skewness of the last N values", 3),
    "Kurt": Op(_ROLL, "bias-corrected sample excess kurtosis of the last N values", 4),
    "Max": Op(_ROLL, "largest of the last N values"),
    "Min": Op(_ROLL, "smallest of the last N values"),
    "Med": Op(_ROLL, "median of the last N values"),
    "Quantile": Op(("x", "w", "q"), "q-quantile of the last N values (linear interpolation)"),
    "Rank": Op(_ROLL, "percentile rank of x among the last N values: average rank / N, in (0, 1]"),
    "IdxMax": Op(_ROLL, "1-based position of the largest of the last N values, from the oldest"),
    "IdxMin": Op(_ROLL, "1-based position of the smallest of the last N values, from the oldest"),
    "Slope": Op(_ROLL, "slope of the least-squares line of the last N values on time", 2),
    "Rsquare": Op(_ROLL, "R^2 of the least-squares line of the last N values on time", 3),
    "Resi": Op(_ROLL, "residual of x from the least-squares line of the last N values on time", 2),
    "EMA": Op(_ROLL, "exponential moving average, span N (alpha = 2 / (N + 1)), adjusted"),
    "WMA": Op(_ROLL, "linearly weighted mean of the last N values (newest weight N, oldest 1)"),
    "Corr": Op(("x", "x", "w"), "Pearson correlation of x and y over the last N rows", 2),
    "Cov": Op(("x", "x", "w"), "sample covariance (ddof=1) of x and y over the last N rows", 2),
    "Abs": Op(("x",), "|x|"),
    "Log": Op(("x",), "natural logarithm (null where x <= 0)"),
    "Sign": Op(("x",), "-1, 0 or 1"),
    "Power": Op(("x", "x"), "x ** y"),
    "Greater": Op(("x", "x"), "elementwise larger of x and y"),
    "Less": Op(("x", "x"), "elementwise smaller of x and y"),
    "If": Op(("x", "x", "x"), "y where x is true (non-zero), else z"),
}
# Operators written as symbols; their node names, as `--explain` prints them.
BINARY = {
    "+": "Add",
    "-": "Sub",
    "*": "Mul",
    "/": "Div",
    ">": "Gt",
    ">=": "Ge",
    "<": "Lt",
    "<=": "Le",
    "==": "Eq",
    "!=": "Ne",
}
COMPARISONS = (">", ">=", "<", "<=", "==", "!=")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|\$(?P<field>\w+)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op>>=|<=|==|!=|[-+*/(),<>]))"
)


@dataclass(frozen=True)
class Node:
    """One AST node: kind "num" (value), "field" (name), or "call" (name: an OPS or BINARY node name, or
    "Neg"; args)."""

    kind: str
    name: str = ""
    value: float = 0.0
    args: tuple[Node, ...] = ()
    height: int = 1  # levels of the tree below and including this node (the parser bounds it)

    def __str__(self) -> str:
        """The parsed form, every operator written as a call: Sub(Div($close, Ref($close, 5)), 1)."""
        if self.kind == "num":
            return _number(self.value)
        if self.kind == "field":
            return f"${self.name}"
        return f"{self.name}({', '.join(map(str, self.args))})"

    @property
    def lookback(self) -> int:
        """Bars of a symbol's history the first value needs (a field reads 1: the bar itself)."""
        if self.kind != "call":
            return 1
        inner = max(a.lookback for a in self.args if a.kind != "num") if self.series else 1
        op = OPS.get(self.name)
        if op is None or "w" not in op.args and "n" not in op.args:
            return inner
        param = int(self.args[op.args.index("w" if "w" in op.args else "n")].value)
        return inner + (param - 1 if "w" in op.args else param)

    @property
    def window(self) -> int:
        """The longest window or offset anywhere in the expression (0 if none)."""
        own = 0
        op = OPS.get(self.name) if self.kind == "call" else None
        if op is not None:
            own = max((int(a.value) for a, kind in zip(self.args, op.args) if kind in ("w", "n")), default=0)
        return max([own, *(a.window for a in self.args)])

    @property
    def series(self) -> bool:
        """Whether the node varies with the bars (a pure number does not)."""
        return self.kind == "field" or any(a.series for a in self.args)

    @property
    def operators(self) -> tuple[str, ...]:
        """The named operators it calls (OPS keys), in first-use order."""
        own = (self.name,) if self.kind == "call" and self.name in OPS else ()
        return tuple(dict.fromkeys((*own, *(o for a in self.args for o in a.operators))))

    @property
    def fields(self) -> tuple[str, ...]:
        """Input columns, in first-use order."""
        if self.kind == "field":
            return (self.name,)
        return tuple(dict.fromkeys(f for a in self.args for f in a.fields))


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) and abs(value) < 1e15 else repr(value)


class ExpressionError(RecipeError):
    """A factor expression that cannot be used (syntax, unknown name, arity, window, look-ahead)."""


@dataclass(frozen=True)
class Expression:
    """A named, checked factor expression."""

    name: str
    text: str
    root: Node

    @property
    def lookback(self) -> int:
        return self.root.lookback

    @property
    def window(self) -> int:
        return self.root.window

    @property
    def fields(self) -> tuple[str, ...]:
        return self.root.fields


def parse(name: str, text: str) -> Expression:
    """Parse and check `text`; ExpressionError (one line naming the expression and the term) if unusable."""
    where = f"features.expressions.{name} = {shown(text, 100)}"
    if not re.fullmatch(NAME_PATTERN, name):
        raise ExpressionError(
            f"features.expressions: {name!r} is not a usable feature name; use letters, digits and '_' "
            "(not starting with a digit, at most 64 characters), e.g. mom5"
        )
    if name in RESERVED_NAMES:
        raise ExpressionError(
            f"features.expressions: {name!r} is the name of a bar column or key; give the expression another "
            f"name, e.g. {name}_x"
        )
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f'{where}: the expression is empty; write e.g. "$close / Ref($close, 5) - 1"')
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"features.expressions.{name}: the expression has {len(text)} characters, more than {MAX_LENGTH}; "
            "split it into several features"
        )
    root = _Parser(text, where).parse()
    if not root.series:
        raise ExpressionError(f"{where}: the expression reads no field, so it is a constant; use e.g. $close")
    return Expression(name, text, root)


def parse_section(expressions: dict[str, str]) -> list[Expression]:
    """Every expression of a `[features.expressions]` table, sorted by name (the canonical column order,
    whatever order the recipe lists them in)."""
    return [parse(name, expressions[name]) for name in sorted(expressions)]


class _Parser:
    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.depth = 0

    def fail(self, what: str) -> ExpressionError:
        return ExpressionError(f"{self.where}: {what}")

    def _tokenize(self, text: str) -> list[tuple[str, str, int]]:
        tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            found = _TOKEN.match(text, pos)
            if found is None or found.end() == pos:
                start = len(text) - len(text[pos:].lstrip())
                raise self.fail(f"unexpected character {text[start]!r} at position {start + 1}")
            kind = found.lastgroup or "op"
            start = found.start(kind) - (kind == "field")  # a field's token starts at its '$'
            tokens.append((kind, found.group(kind), start))
            pos = found.end()
        return tokens

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise self.fail(f"the expression ends early{f'; expected {value!r}' if value else ''}")
        if value is not None and token[1] != value:
            raise self.fail(f"expected {value!r} at position {token[2] + 1}, got {token[1]!r}")
        self.pos += 1
        return token

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "op" and token[1] in values

    def parse(self) -> Node:
        node = self.comparison()
        token = self.peek()
        if token is not None:
            term = f"${token[1]}" if token[0] == "field" else token[1]
            raise self.fail(f"unexpected {term!r} at position {token[2] + 1}")
        return node

    def make(self, name: str, args: tuple[Node, ...]) -> Node:
        node = Node("call", name, args=args, height=1 + max(a.height for a in args))
        if node.height > MAX_HEIGHT:
            raise self.fail(f"more than {MAX_HEIGHT} operators deep; split it into several features")
        return node

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested more than {MAX_DEPTH} levels deep; split it into several features")

    def comparison(self) -> Node:
        self.nested()
        node = self.additive()
        if self.at(*COMPARISONS):
            op = self.take()[1]
            node = self.make(BINARY[op], (node, self.additive()))
            if self.at(*COMPARISONS):
                raise self.fail(f"chained comparison at position {self.peek()[2] + 1}; add parentheses")
        self.depth -= 1
        return node

    def additive(self) -> Node:
        node = self.term()
        while self.at("+", "-"):
            op = self.take()[1]
            node = self.make(BINARY[op], (node, self.term()))
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.at("*", "/"):
            op = self.take()[1]
            node = self.make(BINARY[op], (node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.at("-"):
            self.take()
            self.nested()
            inner = self.unary()
            self.depth -= 1
            return Node("num", value=-inner.value) if inner.kind == "num" else self.make("Neg", (inner,))
        if self.at("+"):
            self.take()
            return self.unary()
        return self.primary()

    def primary(self) -> Node:
        kind, value, pos = self.take()
        if kind == "num":
            return Node("num", value=float(value))
        if kind == "field":
            return self.field(value)
        if kind == "name":
            return self.call(value, pos)
        if value == "(":
            node = self.comparison()
            self.take(")")
            return node
        raise self.fail(f"unexpected {value!r} at position {pos + 1}")

    def field(self, name: str) -> Node:
        if name in TEXT_COLUMNS:
            raise self.fail(f"${name} is not a number column; fields: {', '.join('$' + f for f in KNOWN_FIELDS)}")
        if name not in KNOWN_FIELDS and suggest(name, KNOWN_FIELDS):
            close = suggest(name, KNOWN_FIELDS).replace("'", "'$", 1)
            raise self.fail(f"unknown field ${name}{close}; fields: {', '.join('$' + f for f in KNOWN_FIELDS)}")
        return Node("field", name)

    def call(self, name: str, pos: int) -> Node:
        if name in KNOWN_FIELDS:
            raise self.fail(f"{name!r} at position {pos + 1} is a field; write ${name}")
        if name not in OPS:
            hint = suggest(name, OPS) or suggest(name.capitalize(), OPS)
            raise self.fail(f"unknown operator {name!r}{hint}; operators: {', '.join(OPS)}")
        self.take("(")
        args = [self.comparison()]
        while self.at(","):
            self.take()
            args.append(self.comparison())
        self.take(")")
        node = self.make(name, tuple(args))
        _check_call(node, self.fail)
        return node


_ROLE = {"w": "window", "n": "offset", "q": "q"}


def _check_call(node: Node, fail) -> None:  # noqa: ANN001 - the parser's error builder
    """Arity and the number arguments (windows, offsets, q) of one operator call."""
    op = OPS[node.name]
    term = str(node)
    if len(node.args) != len(op.args):
        raise fail(
            f"{node.name} takes {len(op.args)} argument(s), {node.name}({op.usage}); got {len(node.args)} in {term}"
        )
    for arg, kind in zip(node.args, op.args):
        if kind == "x":
            continue
        role = f"{node.name}'s {_ROLE[kind]}"
        if arg.kind != "num":
            raise fail(f"{role} must be a number, got {arg} in {term}")
        value = arg.value
        if kind == "q":
            if not 0.0 <= value <= 1.0:
                raise fail(f"{role} must be in [0, 1], got {_number(value)} in {term}")
        elif kind == "n" and value < 0:
            raise fail(
                f"{term} reads {_number(-value)} bar(s) past t (a negative offset is a look into the future); "
                f"use an offset >= 0, e.g. {node.name}({node.args[0]}, {_number(-value)})"
            )
        elif not math.isfinite(value) or value > MAX_WINDOW:
            raise fail(f"{role} is at most {MAX_WINDOW} bars, got {_number(value)} in {term}")
        elif value != math.floor(value):
            raise fail(f"{role} must be a whole number of bars, got {_number(value)} in {term}")
        elif kind == "w" and value < op.min_window:
            raise fail(f"{role} must be at least {op.min_window}, got {_number(value)} in {term}")
