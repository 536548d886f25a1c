import { kindOf } from "./reasons.js";

export interface TallykeyErrorFields {
  status?: number | null;
  code?: string;
  kind?: string;
  reason?: string | null;
  hint?: string | null;
  retryAfter?: number | null;
  url?: string | null;
  body?: Record<string, unknown> | null;
}

/**
 * Every failure of a call: the server's refusal, or no usable answer at all.
 *
 * - `status`: the HTTP status (null when no answer came);
 * - `code`: the server's error code, as in its JSON body ("invalid_token",
 *   "insufficient_scope", "not_found", "conflict", "validation_failed", …), or the
 *   client's own when there was no such body: "server_unreachable",
 *   "unexpected_response" (not tallykey's answer), "misconfigured";
 * - `reason`: the server's reason ("revoked", "expired", "rate_limited", …) when it gave one;
 * - `kind`: what it means, from the reason table (`REASONS`), the same word as the Python
 *   client's exception `code`: "token_revoked", "scope_missing", "rate_limited",
 *   "request_rejected" (404, 409, 422…), "server_unreachable", …;
 * - `message`, `hint`: what happened and what to do; `retryAfter`: seconds (429, 503).
 *
 * Messages never contain a token secret.
 */
export class TallykeyError extends Error {
  readonly status: number | null;
  readonly code: string;
  readonly kind: string;
  readonly reason: string | null;
  readonly hint: string | null;
  readonly retryAfter: number | null;
  readonly url: string | null;
  readonly body: Record<string, unknown> | null;

  constructor(message: string, fields: TallykeyErrorFields = {}) {
    super(message);
    this.name = "TallykeyError";
    this.status = fields.status ?? null;
    this.reason = fields.reason ?? null;
    // without the server's JSON body the failure is the client's own: its code says it
    this.kind = fields.kind ?? (fields.code !== undefined && !fields.body ? fields.code
      : kindOf(this.reason, this.status));
    this.code = fields.code ?? this.kind;
    this.hint = fields.hint ?? null;
    this.retryAfter = fields.retryAfter ?? null;
    this.url = fields.url ?? null;
    this.body = fields.body ?? null;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name, status: this.status, code: this.code, kind: this.kind,
      reason: this.reason, message: this.message, hint: this.hint,
      retryAfter: this.retryAfter, url: this.url,
    };
  }
}
