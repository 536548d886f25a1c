// The server's refusal reasons (`reason` in every error body and verdict) and what each
// means to a client, its `kind`: the same word as the Python client's exception `code`
// (`tallykey.client.REFUSALS`; a test in the Python suite compares both tables with the
// server's list of reasons). A reason not listed here falls back to the HTTP status.

/** reason → kind */
export const REASONS: Readonly<Record<string, string>> = Object.freeze({
  missing: "token_missing",
  malformed: "token_malformed",
  malformed_header: "token_malformed",
  invalid_cost: "request_rejected",
  wrong_region: "wrong_region",
  unknown: "token_not_recognised",
  rotated_out: "token_not_recognised",
  revoked: "token_revoked",
  expired: "token_expired",
  owner_inactive: "owner_inactive",
  suspended: "token_suspended",
  token_pending: "token_pending",
  account_suspended: "token_unusable",
  workspace_archived: "token_unusable",
  ip_not_allowed: "ip_not_allowed",
  insufficient_scope: "scope_missing",
  workspace_not_allowed: "access_denied",
  too_many_attempts: "rate_limited",
  rate_limited: "rate_limited",
  usage_exhausted: "usage_exhausted",
  store_unavailable: "service_unavailable",
  unknown_operation: "request_rejected",
});

/** HTTP status → kind, for an error body without a known reason (a management error). */
export const BY_STATUS: Readonly<Record<number, string>> = Object.freeze({
  400: "request_rejected",
  401: "token_not_recognised",
  403: "access_denied",
  404: "request_rejected",
  409: "request_rejected",
  413: "request_rejected",
  415: "request_rejected",
  422: "request_rejected",
  429: "rate_limited",
  503: "service_unavailable",
});

/** The kind of a refusal: by its reason, else by its HTTP status. */
export function kindOf(reason: string | null | undefined, status: number | null): string {
  if (reason && Object.prototype.hasOwnProperty.call(REASONS, reason)) return REASONS[reason]!;
  if (status !== null && Object.prototype.hasOwnProperty.call(BY_STATUS, status)) return BY_STATUS[status]!;
  return "unexpected_response";
}
