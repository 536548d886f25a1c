import type { IncomingMessage, ServerResponse } from "node:http";
import { Tallykey } from "./client.js";
import { TallykeyError } from "./errors.js";
import type { RateLimitState, RefusedToken, Verification } from "./types.js";

const REALM = "tallykey";

export interface RequireTokenOptions {
  /** The tallykey server, e.g. "https://tokens.example.com". */
  baseUrl?: string;
  /** Or a client to use (its baseUrl). */
  client?: Tallykey;
  /** Scopes every request must hold (all of them). */
  scopes?: string[] | string;
  /** The workspace (id or slug) they must be held in: fixed, or read from the request. */
  workspace?: string | ((req: IncomingMessage) => string | null | undefined);
  timeoutMs?: number;
}

/** What `requireToken` sets on the request. */
export type TallykeyRequest = IncomingMessage & { tallykey?: Verification };
type Next = (error?: unknown) => void;

/**
 * Express/Connect middleware: verifies the request's `Authorization` header with tallykey
 * (`POST /api/v1/verify`), sets `req.tallykey` to the verdict and calls `next()`, or
 * answers the refusal itself with tallykey's status, JSON body (`error`, `message`,
 * `reason`, `hint`), `WWW-Authenticate` challenge, `Tallykey-Reason`, `Retry-After` and
 * `RateLimit-*`. When tallykey cannot be reached it answers 503 (fails closed).
 */
export function requireToken(options: RequireTokenOptions) {
  if (!options?.client && typeof options?.baseUrl !== "string") {  // e.g. an unset environment variable
    throw new TallykeyError("requireToken({ baseUrl }) needs the tallykey server's base URL.", {
      code: "misconfigured", hint: 'Pass e.g. { baseUrl: "https://tokens.example.com" } (is the variable it comes from set?).',
    });
  }
  const client = options.client ?? new Tallykey({ baseUrl: options.baseUrl as string, timeoutMs: options.timeoutMs });
  const scopes = typeof options.scopes === "string" ? [options.scopes] : options.scopes ?? [];
  const workspaceOf = typeof options.workspace === "function" ? options.workspace : () => options.workspace as string | undefined;
  return function tallykeyRequireToken(req: IncomingMessage, res: ServerResponse, next: Next): void {
    let workspace: string | null | undefined;
    try {
      workspace = workspaceOf(req);
    } catch (error) {
      next(error);
      return;
    }
    const authorization = req.headers.authorization;
    client.verify(null, {
      authorization, scopes, workspace: workspace ?? undefined,
      clientIp: req.socket?.remoteAddress, userAgent: req.headers["user-agent"],
    }).then((verdict) => {
      (req as TallykeyRequest).tallykey = verdict;
      if (verdict.valid) {
        setRateLimitHeaders(res, verdict.rateLimits);
        next();
      } else {
        refuse(res, verdict);
      }
    }, (error: unknown) => {
      if (!(error instanceof TallykeyError)) {
        next(error);
        return;
      }
      // the same reason as tallykey's own 503 and the nginx configuration's answer
      send(res, 503, { "Retry-After": "2", "Tallykey-Reason": "store_unavailable" }, {
        error: "verification_unavailable",
        message: "The request's token could not be checked: the token service did not answer.",
        reason: "store_unavailable",
        hint: "Try again in a few seconds.",
      });
    });
  };
}

function refuse(res: ServerResponse, verdict: RefusedToken): void {
  const headers: Record<string, string> = {};
  if (verdict.status !== 503) headers["WWW-Authenticate"] = challenge(verdict);
  if (verdict.reason) headers["Tallykey-Reason"] = verdict.reason;
  if (verdict.retryAfter !== null) headers["Retry-After"] = String(verdict.retryAfter);
  setRateLimitHeaders(res, verdict.rateLimits);
  const body: Record<string, unknown> = { error: verdict.code, message: verdict.message };
  if (verdict.reason) body.reason = verdict.reason;
  if (verdict.hint) body.hint = verdict.hint;
  if (verdict.retryAfter !== null) body.retry_after = verdict.retryAfter;
  send(res, verdict.status, headers, body);
}

/** RFC 6750 §3: no error code when no credentials were sent at all. */
function challenge(verdict: RefusedToken): string {
  if (verdict.code === "missing_token") return `Bearer realm="${REALM}"`;
  const description = [...verdict.message].filter((c) => c >= " " && c <= "~" && c !== '"' && c !== "\\").join("");
  return `Bearer realm="${REALM}", error="${verdict.code}", error_description="${description}"`;
}

function setRateLimitHeaders(res: ServerResponse, limits: RateLimitState[]): void {
  if (!limits.length) return;
  const tightest = limits.reduce((a, b) => (b.remaining < a.remaining ? b : a));
  res.setHeader("RateLimit-Limit", String(tightest.limit));
  res.setHeader("RateLimit-Remaining", String(tightest.remaining));
  res.setHeader("RateLimit-Reset", String(tightest.reset));
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body: unknown): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.setHeader("Content-Type", "application/json");
  res.setHeader("Cache-Control", "no-store");
  res.setHeader("Content-Length", String(Buffer.byteLength(text)));
  res.end(text);
}
