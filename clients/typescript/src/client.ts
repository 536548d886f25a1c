import { TallykeyError } from "./errors.js";
import { kindOf } from "./reasons.js";
import type {
  IssuedToken, RateLimitState, RevokedToken, SuspendedToken, Token, TokenCreate,
  TokenListQuery, TokenPage, TokenRenew, TokenUpdate, Verification, VerifyOptions,
  VerifyResponse,
} from "./types.js";

export const VERSION = "0.1.0";
const USER_AGENT = `tallykey-node/${VERSION}`;
const DEFAULT_TIMEOUT_MS = 10_000;
/** The longest Authorization header tallykey reads (`MAX_CREDENTIALS_LENGTH`). */
const MAX_AUTHORIZATION_LENGTH = 1024;
/** Keys whose values are free-form maps: their own keys are kept as they are. */
const OPAQUE = new Set(["metadata", "stops_by", "stopsBy", "workspaces"]);

export interface TallykeyOptions {
  /** The tallykey server, e.g. "https://tokens.example.com". */
  baseUrl: string;
  /** A management token (`tokens:manage`) for `tokens.*`; `verify()` needs none. */
  token?: string;
  /** Per request; default 10 000 ms. */
  timeoutMs?: number;
  /** Another fetch (e.g. with a proxy agent); default the global fetch. */
  fetch?: typeof fetch;
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | null | undefined>;
  idempotencyKey?: string;
}

/**
 * A tallykey server: `verify()` checks a token for a request, `tokens.*` manages tokens.
 *
 *     const tk = new Tallykey({ baseUrl: "https://tokens.example.com", token });
 *     const verdict = await tk.verify(secret, { scopes: ["orders:read"] });
 *     if (!verdict.valid) console.log(verdict.reason, verdict.message, verdict.hint);
 */
export class Tallykey {
  readonly baseUrl: string;
  readonly tokens: Tokens;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: TallykeyOptions) {
    if (!options || typeof options.baseUrl !== "string") {
      throw new TallykeyError("new Tallykey({ baseUrl }) needs the server's base URL.", {
        code: "misconfigured", hint: 'Pass e.g. { baseUrl: "https://tokens.example.com" }.',
      });
    }
    let url: URL;
    try {
      url = new URL(options.baseUrl.trim());
    } catch {
      url = new URL("invalid:");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TallykeyError(`The base URL ${JSON.stringify(options.baseUrl)} is not an http(s) URL.`, {
        code: "misconfigured", hint: "Pass it as https://host[:port].",
      });
    }
    this.baseUrl = url.toString().replace(/\/+$/, "");
    this.#token = options.token?.trim() || undefined;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.tokens = new Tokens(this);
  }

  /**
   * Check `secret` for a request (`POST /api/v1/verify`): a `Verification`, valid (who the
   * token is) or refused (`reason`, `message`, `hint`, and the `status` to answer). Throws
   * a `TallykeyError` only when no verdict came back.
   */
  async verify(secret: string | null | undefined, options: VerifyOptions = {}): Promise<Verification> {
    const body: Record<string, unknown> = {};
    if (options.authorization !== undefined) body.authorization = options.authorization;
    else if (secret) body.token = secret;
    const scopes = typeof options.scopes === "string" ? [options.scopes] : options.scopes;
    if (scopes && scopes.length) body.required_scopes = scopes;
    if (options.workspace) body.workspace = options.workspace;
    if (options.cost !== undefined) body.cost = options.cost;
    if (options.clientIp) body.client_ip = options.clientIp;
    if (options.userAgent) body.user_agent = options.userAgent;
    const header = options.authorization ?? (secret ? `Bearer ${secret}` : undefined);
    if (typeof header === "string" && header.length > MAX_AUTHORIZATION_LENGTH) {
      // tallykey's own verdict for such a header (auth/header.py); /api/v1/verify would
      // refuse the request itself (422) above 4096 characters instead of answering one
      return {
        valid: false, status: 400, code: "invalid_request", kind: kindOf("malformed_header", 400),
        reason: "malformed_header",
        message: `The Authorization header is ${header.length} characters long; a tallykey token is far shorter.`,
        hint: "Expected exactly: Authorization: Bearer <token>, or Authorization: Basic <token> or Basic base64(<username>:<password>).",
        retryAfter: null, rateLimits: [],
      };
    }
    const answer = await this.#call("POST", "/api/v1/verify", body, {}, false) as VerifyResponse;
    if (typeof answer?.allowed !== "boolean" || typeof answer.status !== "number") {
      throw new TallykeyError(`POST ${this.baseUrl}/api/v1/verify answered 200 but not with a verdict.`, {
        status: 200, code: "unexpected_response", url: `${this.baseUrl}/api/v1/verify`,
        hint: "Is this the base URL of a tallykey server?",
      });
    }
    const rateLimits = camelize(answer.rate_limits ?? []) as RateLimitState[];
    if (answer.allowed) {
      return {
        valid: true, status: answer.status, tokenId: answer.token_id ?? "", name: answer.name ?? null,
        account: answer.account ?? null, kind: answer.kind ?? "", scopes: answer.scopes ?? [],
        workspaces: answer.workspaces ?? {}, workspace: answer.workspace ?? null,
        expiresAt: answer.expires_at ?? "", externalId: answer.external_id ?? null,
        metadata: answer.metadata ?? null, creditsRemaining: answer.credits_remaining ?? null,
        rateLimits,
      };
    }
    return {
      valid: false, status: answer.status, code: answer.error ?? "missing_token",
      kind: kindOf(answer.reason, answer.status), reason: answer.reason ?? null, message: answer.message ?? "",
      hint: answer.hint ?? null, retryAfter: answer.retry_after ?? null, rateLimits,
    };
  }

  /**
   * Any other call of the management API (`/api/v1/…`) with the client's token: the body
   * is sent with snake_case keys, the answer comes back with camelCase keys.
   */
  async request<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    return camelize(await this.#call(method, path, options.body === undefined ? undefined : snakeize(options.body),
      options, true)) as T;
  }

  async #call(method: string, path: string, body: unknown, options: RequestOptions,
    authenticated: boolean): Promise<any> {
    if (authenticated && !this.#token) {
      throw new TallykeyError("The management API needs a token.", {
        code: "misconfigured",
        hint: "Create the client with new Tallykey({ baseUrl, token }) (a management token with tokens:manage).",
      });
    }
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = { Accept: "application/json", "User-Agent": USER_AGENT };
    if (authenticated) headers.Authorization = `Bearer ${this.#token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
    const where = url.toString();
    let response: Response;
    try {
      response = await this.#fetch(where, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (failure) {
      const what = (failure as Error)?.name === "TimeoutError" ? `timed out after ${this.#timeoutMs} ms`
        : `failed (${describe(failure)})`;
      throw new TallykeyError(`Could not reach ${where}: the connection ${what}.`, {
        code: "server_unreachable", url: where, hint: "Check the base URL, your network, proxy and firewall.",
      });
    }
    const text = await response.text();
    let parsed: unknown = undefined;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch { /* not JSON: below */ }
    const object = parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)
      ? parsed as Record<string, unknown> : null;
    if (response.ok && (object !== null || Array.isArray(parsed))) return parsed;
    if (object === null || typeof object.error !== "string" || typeof object.message !== "string") {
      throw new TallykeyError(`${method} ${where} answered HTTP ${response.status}, not a tallykey answer.`, {
        status: response.status, code: "unexpected_response", url: where,
        hint: response.status >= 500 ? "The server failed; try again later, or tell the platform's operators."
          : "Is this the base URL of a tallykey server? It answers /api/v1/… with JSON.",
      });
    }
    const header = response.headers.get("retry-after");
    const retry = typeof object.retry_after === "number" ? object.retry_after
      : header && /^\d+$/.test(header) ? Number(header) : null;
    throw new TallykeyError(object.message, {
      status: response.status, code: object.error, url: where, retryAfter: retry,
      reason: typeof object.reason === "string" ? object.reason : null,
      hint: typeof object.hint === "string" ? object.hint : null, body: object,
    });
  }

  toJSON(): Record<string, unknown> { // never the token
    return { baseUrl: this.baseUrl };
  }
}

/** `tk.tokens`: the management API's token calls (`/api/v1/tokens`), fields in camelCase. */
export class Tokens {
  // every method is async: a bad argument rejects the promise, never throws synchronously
  readonly #client: Tallykey;

  constructor(client: Tallykey) {
    this.#client = client;
  }

  /** A new token; the answer's `token` is its full secret, shown this once. */
  async create(fields: TokenCreate, options: { idempotencyKey?: string } = {}): Promise<IssuedToken> {
    return this.#client.request("POST", "/api/v1/tokens", { body: fields, ...options });
  }

  /** One page of tokens (filters: status, search, kind, workspace, target, externalId, limit, after). */
  async list(query: TokenListQuery = {}): Promise<TokenPage> {
    return this.#client.request("GET", "/api/v1/tokens", { query: snakeize(query) as RequestOptions["query"] });
  }

  async get(id: string): Promise<Token> {
    return this.#client.request("GET", tokenPath(id));
  }

  /** Edit name, description, scopes, IP allow-list, limits, credits, metadata…; expiry only earlier. */
  async update(id: string, fields: TokenUpdate): Promise<Token> {
    return this.#client.request("PATCH", tokenPath(id), { body: fields });
  }

  /** A new secret for the same token; the old one works `graceSeconds` more (default one day). */
  async rotate(id: string, options: { graceSeconds?: number; idempotencyKey?: string } = {}): Promise<IssuedToken> {
    const { idempotencyKey, ...body } = options;
    return this.#client.request("POST", tokenPath(id, "rotate"), { body, idempotencyKey });
  }

  /** A successor with a new expiry (`expiresAt` or `expiresInDays`); this one stops after `graceSeconds`. */
  async renew(id: string, options: TokenRenew & { idempotencyKey?: string } = {}): Promise<IssuedToken> {
    const { idempotencyKey, ...body } = options;
    return this.#client.request("POST", tokenPath(id, "renew"), { body, idempotencyKey });
  }

  /** Stop the token until resumed (401 `suspended`), on every live node once answered. */
  async suspend(id: string): Promise<SuspendedToken> {
    return this.#client.request("POST", tokenPath(id, "suspend"));
  }

  async resume(id: string): Promise<SuspendedToken> {
    return this.#client.request("POST", tokenPath(id, "resume"));
  }

  /** Revoke at once, for good. */
  async revoke(id: string, options: { reason?: string } = {}): Promise<RevokedToken> {
    return this.#client.request("POST", tokenPath(id, "revoke"), { body: { reason: options.reason ?? "" } });
  }
}

function tokenPath(id: string, action?: string): string {
  if (typeof id !== "string" || !id) {
    throw new TallykeyError("A token id is needed.", { code: "misconfigured", hint: "Pass the token's id (token.id)." });
  }
  const path = `/api/v1/tokens/${encodeURIComponent(id)}`;
  return action ? `${path}/${action}` : path;
}

function describe(failure: unknown): string {
  const cause = (failure as { cause?: { code?: string; message?: string } })?.cause;
  return cause?.code ?? cause?.message ?? (failure as Error)?.message ?? String(failure);
}

function camelKey(key: string): string {
  return key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function snakeKey(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function convert(value: unknown, rename: (key: string) => string): unknown {
  if (Array.isArray(value)) return value.map((item) => convert(item, rename));
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    out[rename(key)] = OPAQUE.has(key) ? inner : convert(inner, rename);
  }
  return out;
}

/** A JSON answer with camelCase keys (free-form maps such as `metadata` keep theirs). */
export function camelize(value: unknown): unknown {
  return convert(value, camelKey);
}

/** A request body with snake_case keys (free-form maps such as `metadata` keep theirs). */
export function snakeize(value: unknown): unknown {
  return convert(value, snakeKey);
}
