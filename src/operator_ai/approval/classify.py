"""The command classifier: is a shell command provably read-only?

The command is parsed with a real bash grammar (tree-sitter-bash) and every part of it is
judged: each simple command by its program's table of read-only subcommands and flags,
every redirection, every command substitution, every construct. The verdict is the worst
part's: ``writes`` when some part changes state, ``unknown`` when some part cannot be proved
read-only (an unknown program, a computed program name, ``eval``, ``bash -c``, a script),
``read_only`` only when every part is. It fails closed: what it does not know is never
read-only, and the model's own claim about a command plays no part.
"""

from __future__ import annotations

import re
import threading

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

from operator_ai.approval.programs import (
    ARITHMETIC,
    SAFE_ENV,
    SAFE_SINKS,
    judge,
    system_program,
)
from operator_ai.approval.verdicts import (
    READ,
    Args,
    Classification,
    Verdict,
    unknown,
    worst,
    writes,
)

BASH = Language(tree_sitter_bash.language())
_parsers = threading.local()  # the C library is not thread-safe: a parser per thread


def classify(command: str) -> Classification:
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = Parser(BASH)
    if any(mark in command for mark in MISREAD) or ("$'" in command and "\\" in command):
        return unknown("it uses quoting the grammar may read otherwise than bash")
    root = parser.parse(command.encode()).root_node
    if root.has_error:
        return unknown("the shell grammar cannot parse it")
    verdict = _node(root)
    if verdict.read_only and not command.strip():
        return unknown("there is no command")
    return verdict


# -- the constructs -------------------------------------------------------------------------

CONTAINERS = {
    "program", "list", "pipeline", "compound_statement", "subshell", "do_group",
    "if_statement", "elif_clause", "else_clause", "while_statement", "case_statement",
    "case_item", "negated_command", "binary_expression", "unary_expression",
    "parenthesized_expression",
}  # fmt: skip
"""Constructs that run only what is inside them."""
VALUES = {
    "word", "number", "raw_string", "string", "string_content", "concatenation",
    "simple_expansion", "ansi_c_string", "translated_string", "variable_name",
    "special_variable_name", "command_name",
    "heredoc_start", "heredoc_end", "heredoc_content", "heredoc_body", "regex",
    "extglob_pattern", "comment", "file_descriptor", "array", "test_operator",
}  # fmt: skip
"""Parts that only compute text: they are judged by what they contain."""
MISREAD = ("`", "\r")
"""Backquotes (nested or in a here-document), carriage returns and ANSI-C strings with
escapes: where tree-sitter-bash and bash part ways, so a command could hide in what the
grammar reads as text."""


def _node(node: Node) -> Classification:
    kind = node.type
    if kind == "command":
        return _command(node)
    if kind == "redirected_statement":
        return worst([_node(c) for c in node.named_children])
    if kind == "file_redirect":
        return _redirect(node)
    if kind == "heredoc_redirect" and "\\" in _text(node):
        return unknown("a here-document with a backslash, which bash may end elsewhere")
    if kind in ("herestring_redirect", "heredoc_redirect"):
        return _inside(node)
    if kind == "array" and "[" in _text(node):
        return unknown("an array with subscripts, which bash evaluates")
    if kind == "for_statement":
        variable = node.child_by_field_name("variable")
        return worst([_name_is_plain(variable) if variable is not None else READ, _inside(node)])
    if kind in ("command_substitution", "process_substitution"):
        return worst(_node(c) for c in node.named_children)
    if kind == "variable_assignment":
        return worst([_name_is_plain(node.child_by_field_name("name")), _inside(node)])
    if kind in ("declaration_command", "unset_command"):
        return _declaration(node)
    if kind == "test_command":
        if ARITHMETIC.search(_text(node)):
            return unknown("the test evaluates arithmetic, which can run code")
        return _inside(node)
    if kind == "expansion" and any(c in _text(node) for c in "@!["):
        return unknown("an expansion that can run code or reach other variables")
    if kind in CONTAINERS or kind in VALUES:
        return _inside(node)
    if kind == "function_definition":
        return unknown("it defines a shell function")
    return unknown(f"a shell construct it cannot judge ({kind})")


PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
"""A variable name bash gives no meaning to: the shell's own variables (PATH, PS4,
BASH_ENV, IFS...) are upper case, and a subscript is evaluated."""


def _name_is_plain(name: Node | None) -> Classification:
    text = _text(name) if name is not None else ""
    if PLAIN_NAME.fullmatch(text):
        return READ  # shell state of this command's own fresh shell, nothing more
    return unknown(f"it sets {text or 'a variable'}, which can change what runs after")


def _declaration(node: Node) -> Classification:
    words = _text(node).split()
    if words[0] not in ("export", "local", "unset") or any(w.startswith("-") for w in words[1:]):
        return unknown(f"{words[0]} with these options can change what runs after")
    parts = [_inside(node)]
    for child in node.named_children:
        if child.type == "variable_assignment":
            parts.append(_name_is_plain(child.child_by_field_name("name")))
        else:  # a name, bare or quoted: a quoted subscript is evaluated
            parts.append(_name_is_plain(child))
    return worst(parts)


def _inside(node: Node) -> Classification:
    return worst(_node(c) for c in node.named_children)


def _redirect(node: Node) -> Classification:
    operator = next((c.type for c in node.children if not c.is_named), "")
    target = node.child_by_field_name("destination")
    text = _text(target) if target is not None else ""
    descriptor = next((_text(c) for c in node.named_children if c.type == "file_descriptor"), "")
    inside = worst(_node(c) for c in node.named_children)
    if text.startswith(("/dev/tcp/", "/dev/udp/")):
        return unknown("it opens a network connection through the shell")
    if operator == "<":  # reading a file, onto standard input only
        return inside if descriptor in ("", "0") else unknown(f"it opens {text} on fd {descriptor}")
    if operator in (">&", "<&") and text in ("1", "2") and descriptor in ("", "1", "2"):
        return inside  # standard output and error copied onto each other
    if operator in (">&-", "<&-"):
        return inside
    if text in SAFE_SINKS and operator in (">", ">>", "&>", "&>>", ">|"):
        return inside
    if operator in (">&", "<&"):
        return unknown(f"it copies descriptors in a way it cannot follow ({operator}{text})")
    return writes(f"it redirects output to a file ({operator} {text})")


def _text(node: Node) -> str:
    return node.text.decode(errors="replace") if node.text else ""


# -- simple commands ------------------------------------------------------------------------


def _command(node: Node) -> Classification:
    parts: list[Classification] = []
    name_node = node.child_by_field_name("name")
    words: list[str] = []
    opaque: set[int] = set()
    for child in node.named_children:
        if child.type == "variable_assignment":
            variable = child.child_by_field_name("name")
            if variable is None or _text(variable) not in SAFE_ENV:
                parts.append(unknown(f"it sets {_text(child).split('=')[0]} for the program"))
            parts.append(_inside(child))
        elif child.type in ("herestring_redirect", "file_redirect"):
            parts.append(_node(child))
        elif child != name_node:
            parts.append(_node(child) if child.named_child_count else READ)
            if not _literal(child):
                opaque.add(len(words))
            words.append(_unquoted(child))
    if name_node is None:
        return worst(parts)
    parts.append(_inside(name_node))
    if not _literal(name_node):
        return worst([*parts, unknown("the program's name is only known when it runs")])
    program = system_program(_unquoted(name_node))
    if program is None:
        return worst([*parts, unknown(f"it runs {_unquoted(name_node)}, not a system program")])
    parts.append(judge(program, Args(tuple(words), frozenset(opaque))))
    return worst(parts)


SHELL_MAGIC = set("*?[]{}\\~")
"""Characters the shell expands or strips in an unquoted word: such a word's text is not
the argument the program gets."""


def _literal(node: Node) -> bool:
    """Whether the text of ``node`` is exactly the word the program receives."""
    kind = node.type
    if kind == "raw_string":
        return True
    if kind in ("word", "number", "command_name"):
        text = _text(node)
        return not (SHELL_MAGIC & set(text)) and all(_literal(c) for c in node.named_children)
    if kind == "string":
        plain = all(c.type == "string_content" for c in node.named_children)
        return plain and "\\" not in _text(node)
    if kind == "concatenation":
        return all(_literal(c) for c in node.named_children)
    return False


def _unquoted(node: Node) -> str:
    if node.type == "command_name" and node.named_child_count == 1:
        return _unquoted(node.named_children[0])
    text = _text(node)
    if node.type == "raw_string":
        return text[1:-1]
    if node.type == "string":
        return text[1:-1]
    if node.type == "concatenation":
        return "".join(_unquoted(c) for c in node.named_children) or text
    return text


__all__ = ["Classification", "Verdict", "classify"]
