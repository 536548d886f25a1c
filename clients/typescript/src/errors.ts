import { codeOf } from "./reasons.js";

export interface TallykeyErrorFields {
  status?: number | null;
  code?: string;
  error?: string | null;
  reason?: string | null;
  hint?: string | null;
  retryAfter?: number | null;
  url?: string | null;
  body?: Record<string, unknown> | null;
}

/**
 * Every failure of a call: the server's refusal, or no usable answer at all.
 *
 * - `status`: the HTTP status (null when no answer came: `code` is "server_unreachable");
 * - `code`: what it means, from the reason table (`REASONS`): "token_revoked",
 *   "scope_missing", "rate_limited", "request_rejected" (404, 409, 422…),
 *   "unexpected_response" (not tallykey's answer), "server_unreachable"…;
 * - `reason`: the server's reason ("revoked", "rate_limited", …) when it gave one;
 * - `error`: the server's error code ("invalid_token", "not_found", "conflict", …);
 * - `message`, `hint`: what happened and what to do; `retryAfter`: seconds (429, 503).
 *
 * Messages never contain a token secret.
 */
export class TallykeyError extends Error {
  readonly status: number | null;
  readonly code: string;
  readonly error: string | null;
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
    this.code = fields.code ?? codeOf(this.reason, this.status);
    this.error = fields.error ?? null;
    this.hint = fields.hint ?? null;
    this.retryAfter = fields.retryAfter ?? null;
    this.url = fields.url ?? null;
    this.body = fields.body ?? null;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name, status: this.status, code: this.code, error: this.error,
      reason: this.reason, message: this.message, hint: this.hint,
      retryAfter: this.retryAfter, url: this.url,
    };
  }
}
