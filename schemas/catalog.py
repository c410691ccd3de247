"""The category catalog: scope -> category -> action, each with a display label.

The catalog is data (``schemas/catalog.json``), optionally extended by an operator's extra file in the same
format (setting ``AUDITLOG_CATALOG_EXTRA``). It is the single source of truth for which
``(scope, category, action)`` triples are valid; producers, the consumer, the API and the page all ask it.

Contract:
- action codes are unique within their scope (``member.delete`` exists only in ``organization``);
- an extra file may add scopes, categories and actions and may relabel existing codes; it never removes;
- :meth:`Catalog.check` returns ``None`` for a valid triple, else a message that names the field and the
  valid values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_CATALOG_RESOURCE = "catalog.json"


@dataclass(frozen=True, slots=True)
class Action:
    code: str
    label: str


@dataclass(slots=True)
class Category:
    code: str
    label: str
    actions: dict[str, Action] = field(default_factory=dict)


@dataclass(slots=True)
class Scope:
    code: str
    label: str
    categories: dict[str, Category] = field(default_factory=dict)


#: (scope, category) of "who read the audit log": written only by the API's own self-audit, never by a service
RESERVED = ("organization", "audit_log")
RESERVED_REASON = ("reserved: organization / audit_log events (who read the audit log) are written only by the "
                   "API's own self-audit")


def is_reserved(scope: str, category: str) -> bool:
    """Whether (scope, category) is :data:`RESERVED`."""
    return category == RESERVED[1] and scope == RESERVED[0]


class CatalogError(ValueError):
    """The catalog file itself is malformed."""


class Catalog:
    """An immutable-by-convention view of scopes, categories and actions with labels."""

    def __init__(self, scopes: dict[str, Scope]) -> None:
        self.scopes = scopes
        # (scope, action) -> (category, labels): the lookups on the consumer's hot path.
        self._actions: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        for s in scopes.values():
            for c in s.categories.values():
                for a in c.actions.values():
                    self._actions[(s.code, a.code)] = (c.code, s.label, c.label, a.label)

    # ----- construction -------------------------------------------------------------------------
    @classmethod
    def from_documents(cls, *docs: dict[str, Any]) -> Catalog:
        scopes: dict[str, Scope] = {}
        for doc in docs:
            if not isinstance(doc, dict) or not isinstance(doc.get("scopes"), list):
                raise CatalogError("catalog document must be an object with a 'scopes' list")
            for s in doc["scopes"]:
                scode, slabel = _code_label(s, "scope")
                scope = scopes.setdefault(scode, Scope(scode, slabel))
                scope.label = slabel
                for c in s.get("categories", []):
                    ccode, clabel = _code_label(c, f"category of scope {scode!r}")
                    cat = scope.categories.setdefault(ccode, Category(ccode, clabel))
                    cat.label = clabel
                    for a in c.get("actions", []):
                        acode, alabel = _code_label(a, f"action of {scode}/{ccode}")
                        for other in scope.categories.values():
                            if other is not cat and acode in other.actions:
                                raise CatalogError(
                                    f"action {acode!r} appears in two categories of scope {scode!r}"
                                )
                        cat.actions[acode] = Action(acode, alabel)
        return cls(scopes)

    @classmethod
    def load(cls, extra_file: str | Path | None = None) -> Catalog:
        """The default catalog, extended by ``extra_file`` when given."""
        docs = [_default_document()]
        if extra_file:
            try:
                docs.append(json.loads(Path(extra_file).read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError) as exc:
                raise CatalogError(f"cannot read catalog extra file {extra_file}: {exc}") from exc
        return cls.from_documents(*docs)

    # ----- queries --------------------------------------------------------------------------------
    def check(self, scope: str, category: str, action: str) -> tuple[str, str] | None:
        """``None`` if the triple is valid, else ``(field, message)``."""
        s = self.scopes.get(scope)
        if s is None:
            return "scope", f"unknown scope {scope!r}; valid: {', '.join(self.scopes)}"
        c = s.categories.get(category)
        if c is None:
            return "category", (
                f"unknown category {category!r} for scope {scope!r}; valid: {', '.join(s.categories)}"
            )
        if action not in c.actions:
            return "action", (
                f"unknown action {action!r} for {scope}/{category}; valid: {', '.join(c.actions)}"
            )
        return None

    def valid_action_label(self, scope: str, category: str, action: str) -> str | None:
        """The action's label if the triple is valid, else ``None`` (one lookup: the validator's hot path)."""
        hit = self._actions.get((scope, action))
        return hit[3] if hit is not None and hit[0] == category else None

    def labels(self, scope: str, action: str) -> tuple[str, str, str] | None:
        """(scope_label, category_label, action_label) for a stored event, or None if unknown."""
        hit = self._actions.get((scope, action))
        return None if hit is None else hit[1:]

    def action_label(self, scope: str, action: str) -> str:
        hit = self._actions.get((scope, action))
        return hit[3] if hit else action

    def all_actions(self) -> list[tuple[str, str, str]]:
        """Every valid (scope, category, action) triple, in catalog order."""
        return [(s, c, a) for (s, a), (c, *_rest) in self._actions.items()]

    def producer_actions(self) -> list[tuple[str, str, str]]:
        """:meth:`all_actions` without the :data:`RESERVED` category (what a service may publish)."""
        return [t for t in self.all_actions() if not is_reserved(t[0], t[1])]

    def places(self, action: str) -> list[tuple[str, str]]:
        """(scope, category) of every place a service may publish ``action`` (one: the SDK fills them in)."""
        by_action = self.__dict__.get("_places")
        if by_action is None:
            by_action = {}
            for scope, category, code in self.producer_actions():
                by_action.setdefault(code, []).append((scope, category))
            self.__dict__["_places"] = by_action
        return list(by_action.get(action, ()))

    def actions_matching(self, needle: str) -> list[tuple[str, str]]:
        """(scope, action) pairs whose code or label (of scope, category or action) contains ``needle``,
        case-insensitively: used by keyword search to match labels that are not stored in rows."""
        n = needle.casefold()
        out = []
        for (scode, acode), (ccode, sl, cl, al) in self._actions.items():
            hay = (scode, acode, ccode, sl, cl, al)
            if any(n in h.casefold() for h in hay):
                out.append((scode, acode))
        return out

    def to_document(self) -> dict[str, Any]:
        """The catalog as served by ``GET /v1/catalog``."""
        return {
            "scopes": [
                {
                    "code": s.code,
                    "label": s.label,
                    "categories": [
                        {
                            "code": c.code,
                            "label": c.label,
                            "actions": [{"code": a.code, "label": a.label} for a in c.actions.values()],
                        }
                        for c in s.categories.values()
                    ],
                }
                for s in self.scopes.values()
            ]
        }


def _code_label(obj: Any, what: str) -> tuple[str, str]:
    if not isinstance(obj, dict) or not isinstance(obj.get("code"), str) or not obj["code"]:
        raise CatalogError(f"{what}: every entry needs a non-empty string 'code'")
    label = obj.get("label", obj["code"])
    if not isinstance(label, str):
        raise CatalogError(f"{what} {obj['code']!r}: 'label' must be a string")
    return obj["code"], label


@lru_cache(maxsize=1)
def _default_document() -> dict[str, Any]:
    text = resources.files("auditlogkit.schemas").joinpath(DEFAULT_CATALOG_RESOURCE).read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@lru_cache(maxsize=8)
def get_catalog(extra_file: str | None = None) -> Catalog:
    """The process-wide catalog for the given extra file (cached)."""
    return Catalog.load(extra_file)
