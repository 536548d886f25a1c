"""Console forms: what a posted form means for the services, and what to show again when
the service refuses it (the user's own input plus the error)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from starlette.datastructures import FormData

from tallykey.accounts.scopes import ScopeCatalog
from tallykey.console.views import split_lines
from tallykey.errors import ValidationFailed
from tallykey.tokens import policy
from tallykey.tokens.models import PERSONAL
from tallykey.tokens.policy import DEFAULT_GRACE_SECONDS, EXPIRY_PRESET_DAYS, MAX_GRACE_SECONDS
from tallykey.tokens.service import Renewal, TokenChanges, TokenDraft

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
                   issue_key=text(form, ISSUE_KEY_FIELD))

    def fields(self) -> dict[str, object]:
        """What the form asks for (not its key, not its errors): repeats must match."""
        return {"name": self.name, "description": self.description, "kind": self.kind,
                "workspace": self.workspace, "scopes": sorted(self.scopes),
                "target": self.target, "ip_allowlist": self.ip_allowlist,
                "expiry": self.expiry, "expires_on": self.expires_on}

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
        return errors

    def _expiry(self, now: datetime, max_validity_days: int) -> datetime:
        draft = self.draft()
        return policy.resolve_expiry(now, expires_at=draft.expires_at,
                                     expires_in_days=draft.expires_in_days,
                                     max_validity_days=max_validity_days)

    def draft(self) -> TokenDraft:
        """The service's input; `ValidationFailed` if the expiry choice is unreadable."""
        expires_at, days = expiry_choice(self.expiry, self.expires_on)
        return TokenDraft(name=self.name, description=self.description, kind=self.kind,
                          workspace=self.workspace or None, scopes=self.scopes,
                          ip_allowlist=split_lines(self.ip_allowlist),
                          target=self.target or None, expires_at=expires_at,
                          expires_in_days=days)


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
    """The edit form's changes; scopes only when the form showed them (`scopes_shown`)."""
    return TokenChanges(name=text(form, "name"), description=text(form, "description"),
                        ip_allowlist=split_lines(text(form, "ip_allowlist")),
                        target=text(form, "target"),
                        scopes=texts(form, "scopes") if text(form, "scopes_shown") else None)


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
