"""Console forms: what a posted form means for the services, and what to show again when
the service refuses it (the user's own input plus the error)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from starlette.datastructures import FormData

from tallykey.accounts.scopes import ScopeCatalog
from tallykey.console.views import split_lines
from tallykey.controls import rules
from tallykey.errors import ValidationFailed
from tallykey.tokens import policy
from tallykey.tokens.models import PERSONAL
from tallykey.tokens.policy import DEFAULT_GRACE_SECONDS, EXPIRY_PRESET_DAYS, MAX_GRACE_SECONDS
from tallykey.tokens.requests import Renewal, TokenChanges, TokenDraft

CUSTOM_EXPIRY = "date"
#: The hidden field that makes a create or rotate form idempotent (one token per form).
ISSUE_KEY_FIELD = "issue_key"
DEFAULT_PRESET = "30"


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def texts(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


@dataclass
class TokenForm:
    """The create form's values, as typed; `errors` maps a field to its message."""

    name: str = ""
    description: str = ""
    kind: str = PERSONAL
    workspace: str = ""
    scopes: list[str] = field(default_factory=list)
    target: str = ""
    ip_allowlist: str = ""
    expiry: str = DEFAULT_PRESET
    expires_on: str = ""
    #: Key controls (SPEC §13), as typed: see `KeyControlsForm`.
    controls: KeyControlsForm = field(default_factory=lambda: KeyControlsForm())
    #: The plan's id (SPEC §16; administrators choose one), or "" for none.
    plan: str = ""
    issue_key: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, form: FormData) -> TokenForm:
        return cls(name=text(form, "name"), description=text(form, "description"),
                   kind=text(form, "kind") or PERSONAL, workspace=text(form, "workspace"),
                   scopes=texts(form, "scopes"), target=text(form, "target"),
                   ip_allowlist=text(form, "ip_allowlist"),
                   expiry=text(form, "expiry") or DEFAULT_PRESET,
                   expires_on=text(form, "expires_on"),
                   controls=KeyControlsForm.parse(form), plan=text(form, "plan"),
                   issue_key=text(form, ISSUE_KEY_FIELD))

    def fields(self) -> dict[str, object]:
        """What the form asks for (not its key, not its errors): repeats must match."""
        return {"name": self.name, "description": self.description, "kind": self.kind,
                "workspace": self.workspace, "scopes": sorted(self.scopes),
                "target": self.target, "ip_allowlist": self.ip_allowlist,
                "expiry": self.expiry, "expires_on": self.expires_on,
                **self.controls.fields(), **({"plan": self.plan} if self.plan else {})}

    def problems(self, *, targets: list[str], max_validity_days: int, now: datetime,
                 catalog: ScopeCatalog) -> dict[str, str]:
        """Every field's problem at once, in a person's words (the service checks again
        when the token is issued; this is so the form can say everything in one go)."""
        errors: dict[str, str] = {}
        checks: list[tuple[str, Callable[[], object]]] = [
            ("name", lambda: policy.clean_name(self.name)),
            ("description", lambda: policy.clean_description(self.description)),
            ("target", lambda: policy.clean_target(self.target or None, targets)),
            ("scopes", lambda: policy.clean_scopes(self.scopes, catalog)),
            ("expires_at", lambda: self._expiry(now, max_validity_days)),
        ]
        for name, check in checks:
            try:
                check()
            except ValidationFailed as error:
                errors[name] = said(error)
        bad = []
        for number, line in enumerate(split_lines(self.ip_allowlist), 1):
            try:
                policy.parse_cidr(line)
            except ValidationFailed as error:
                bad.append(f"Line {number}: {said(error)}")
        if bad:
            errors["ip_allowlist"] = " ".join(bad)
        errors.update(self.controls.problems())
        return errors

    def _expiry(self, now: datetime, max_validity_days: int) -> datetime:
        expires_at, days = expiry_choice(self.expiry, self.expires_on)
        return policy.resolve_expiry(now, expires_at=expires_at, expires_in_days=days,
                                     max_validity_days=max_validity_days)

    def draft(self) -> TokenDraft:
        """The service's input; `ValidationFailed` if the expiry choice or a key control
        is unreadable."""
        expires_at, days = expiry_choice(self.expiry, self.expires_on)
        return TokenDraft(name=self.name, description=self.description, kind=self.kind,
                          workspace=self.workspace or None, scopes=self.scopes,
                          ip_allowlist=split_lines(self.ip_allowlist),
                          target=self.target or None, expires_at=expires_at,
                          expires_in_days=days, rate_limits=self.controls.rate_limits(),
                          credits=self.controls.credits(),
                          metadata=self.controls.metadata_object(),
                          external_id=self.controls.external_id or None,
                          plan_id=self.plan or None)


@dataclass
class KeyControlsForm:
    """Rate limits (one `NAME=LIMIT/SECONDS[:owner|:external_id]` per line), credits
    (remaining, refill amount and interval; empty: none), metadata (a JSON object) and
    external id, as typed. `credits_shown` is what the edit page showed: credits are
    only set when the field changed, so saving a name never undoes spent credits."""

    rate_limits_text: str = ""
    credits_remaining: str = ""
    refill_amount: str = ""
    refill_interval: str = ""
    credits_shown: str = ""
    metadata: str = ""
    external_id: str = ""

    @classmethod
    def parse(cls, form: FormData) -> KeyControlsForm:
        return cls(rate_limits_text=text(form, "rate_limits"),
                   credits_remaining=text(form, "credits_remaining").strip(),
                   refill_amount=text(form, "refill_amount").strip(),
                   refill_interval=text(form, "refill_interval"),
                   credits_shown=text(form, "credits_shown"),
                   metadata=text(form, "metadata"), external_id=text(form, "external_id"))

    @classmethod
    def of(cls, token: Any) -> KeyControlsForm:
        """The form as the edit page shows a token."""
        return cls(rate_limits_text="\n".join(rules.written_rate_limit(r)
                                              for r in token.rate_limits or []),
                   credits_remaining="" if token.credits_remaining is None
                   else str(token.credits_remaining),
                   refill_amount="" if token.credits_refill_amount is None
                   else str(token.credits_refill_amount),
                   refill_interval=token.credits_refill_interval or "",
                   metadata=json.dumps(token.meta, indent=2) if token.meta else "",
                   external_id=token.external_id or "")

    def fields(self) -> dict[str, object]:
        return {"rate_limits": self.rate_limits_text, "credits_remaining":
                self.credits_remaining, "refill_amount": self.refill_amount,
                "refill_interval": self.refill_interval, "metadata": self.metadata,
                "external_id": self.external_id}

    def shown_credits(self) -> str:
        """The credit fields as one string (what `credits_shown` carries)."""
        return f"{self.credits_remaining}|{self.refill_amount}|{self.refill_interval}"

    def problems(self) -> dict[str, str]:
        errors: dict[str, str] = {}
        checks: list[tuple[str, Callable[[], object]]] = [
            ("rate_limits", lambda: rules.clean_rate_limits(self.rate_limits())),
            ("credits", self._checked_credits),
            ("metadata", lambda: rules.clean_metadata(self.metadata_object())),
            ("external_id", lambda: rules.clean_external_id(self.external_id)),
        ]
        for name, check in checks:
            try:
                check()
            except ValidationFailed as error:
                errors[name] = said(error)
        return errors

    def rate_limits(self) -> list[dict[str, Any]]:
        return [rules.parse_rate_limit(line) for line in split_lines(self.rate_limits_text)]

    def credits(self) -> dict[str, Any] | None:
        """`{"remaining", "refill"}`, or None when the remaining field is empty."""
        if not self.credits_remaining:
            if self.refill_amount:
                raise ValidationFailed("A refill needs the credits to start from.",
                                       "Fill in the remaining credits too.", field="credits")
            return None
        refill = None
        if self.refill_amount or self.refill_interval:
            refill = {"amount": _whole(self.refill_amount, "credits"),
                      "interval": self.refill_interval}
        return {"remaining": _whole(self.credits_remaining, "credits"), "refill": refill}

    def metadata_object(self) -> Any:
        if not self.metadata.strip():
            return None
        try:
            return json.loads(self.metadata)
        except ValueError as error:
            raise ValidationFailed(f"metadata is not valid JSON: {error}.",
                                   "Write a JSON object, e.g. {\"plan\": \"pro\"}.",
                                   field="metadata") from None

    def changes(self) -> dict[str, Any]:
        """The edit form's key-control changes, as `TokenChanges` fields."""
        found: dict[str, Any] = {"rate_limits": self.rate_limits(),
                                 "metadata": self.metadata_object() or {},
                                 "external_id": self.external_id}
        if self.shown_credits() != self.credits_shown:
            credits = self.credits()
            found.update({"credits": credits} if credits else {"remove_credits": True})
        return found

    def _checked_credits(self) -> object:
        credits = self.credits()
        return None if credits is None else rules.clean_credits(credits["remaining"],
                                                                credits["refill"])


def _whole(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise ValidationFailed(f"{value[:20]!r} is not a whole number.", field=name)
    return int(value)


def expiry_choice(expiry: str, expires_on: str) -> tuple[date | None, int | None]:
    """The expiry fieldset's choice (a preset's days, or `date` and a day) as the services
    take it: (expires_at, expires_in_days). `ValidationFailed` if it is unreadable."""
    if expiry == CUSTOM_EXPIRY:
        try:
            return date.fromisoformat(expires_on), None
        except ValueError:
            raise ValidationFailed("Pick the expiry date (YYYY-MM-DD).",
                                   field="expires_at") from None
    if expiry.isascii() and expiry.isdigit() and int(expiry) in EXPIRY_PRESET_DAYS:
        return None, int(expiry)
    raise ValidationFailed("Choose how long the token is valid.", field="expires_at")


def renewal(form: FormData) -> Renewal:
    """The renew form: the successor's expiry and the grace of the renewed token's secret."""
    expires_at, days = expiry_choice(text(form, "expiry"), text(form, "expires_on"))
    return Renewal(expires_at=expires_at, expires_in_days=days,
                   grace_seconds=grace_seconds(form))


def token_changes(form: FormData) -> TokenChanges:
    """The edit form's changes; scopes only when the form showed them (`scopes_shown`),
    key controls only when it showed them (`controls_shown`)."""
    controls = (KeyControlsForm.parse(form).changes() if text(form, "controls_shown")
                else {})
    if text(form, "plan_shown"):  # an administrator's form: the plan select was shown
        controls["plan_id" if text(form, "plan") else "detach_plan"] = (
            text(form, "plan") or True)
    return TokenChanges(name=text(form, "name"), description=text(form, "description"),
                        ip_allowlist=split_lines(text(form, "ip_allowlist")),
                        target=text(form, "target"),
                        scopes=texts(form, "scopes") if text(form, "scopes_shown") else None,
                        **controls)


def grace_seconds(form: FormData) -> int:
    raw = text(form, "grace_days") or str(DEFAULT_GRACE_SECONDS // 86400)
    if not (raw.isascii() and raw.isdigit()) or int(raw) * 86400 > MAX_GRACE_SECONDS:
        raise ValidationFailed("The grace period is 0 to 7 days.", field="grace_seconds")
    return int(raw) * 86400


def said(error: ValidationFailed | Exception) -> str:
    """An error's message and what to do about it, as one sentence pair."""
    message = getattr(error, "message", str(error))
    hint = getattr(error, "hint", "")
    return f"{message} {hint}".strip()


def error_field(error: ValidationFailed | Exception) -> str:
    """The form field an error belongs to (`form` when it names none)."""
    details = getattr(error, "details", {})
    name = details.get("field") if isinstance(details, dict) else None
    if name in {"expires_in_days"}:
        return "expires_at"
    return str(name) if name else "form"
