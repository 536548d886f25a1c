// The management API's types, made from the generated OpenAPI types
// (src/generated/openapi.ts, `npm run generate`) with their fields in camelCase.
import type { components, operations } from "./generated/openapi.js";

type Schemas = components["schemas"];

/** `expires_in_days` → `expiresInDays`. */
export type CamelCase<S extends string> = S extends `${infer Head}_${infer Tail}`
  ? `${Head}${Capitalize<CamelCase<Tail>>}`
  : S;

/** A JSON shape with every key in camelCase (the values of free-form maps keep theirs). */
export type Camelized<T> = T extends readonly (infer Item)[]
  ? Camelized<Item>[]
  : T extends object
    ? { [K in keyof T as K extends string ? CamelCase<K> : K]: Camelized<T[K]> }
    : T;

/** A token as the management API shows it (`GET /api/v1/tokens/{id}`). */
export type Token = Camelized<Schemas["TokenView"]>;
/** A token with its full secret (`token`), shown once: create, rotate, renew. */
export type IssuedToken = Camelized<Schemas["IssuedTokenView"]>;
/** A revoked token and how far the revocation reached (`propagation`). */
export type RevokedToken = Camelized<Schemas["RevokedTokenView"]>;
/** A suspended or resumed token and how far the change reached (`propagation`). */
export type SuspendedToken = Camelized<Schemas["SuspensionView"]>;
/** One page of tokens; pass `nextCursor` as `after` for the next. */
export type TokenPage = Camelized<Schemas["TokenList"]>;

export type TokenCreate = Camelized<Schemas["TokenCreate"]>;
export type TokenUpdate = Camelized<Schemas["TokenUpdate"]>;
export type TokenRenew = Camelized<Schemas["RenewRequest"]>;
export type TokenListQuery = Camelized<NonNullable<operations["list_tokens_api_v1_tokens_get"]["parameters"]["query"]>>;

/** A rate limit as counted on the answering node. */
export type RateLimitState = Camelized<Schemas["RateLimitStateView"]>;
/** The raw `POST /api/v1/verify` answer. */
export type VerifyResponse = Schemas["VerifyResponse"];

/** `verify()` found the token valid for the request. */
export interface VerifiedToken {
  valid: true;
  status: number;
  tokenId: string;
  name: string | null;
  account: string | null;
  kind: string;
  scopes: string[];
  /** Per workspace id the token sees: its scopes there. */
  workspaces: Record<string, string[]>;
  /** The workspace id the verdict answers for, when the request named one. */
  workspace: string | null;
  expiresAt: string;
  externalId: string | null;
  metadata: Record<string, unknown> | null;
  creditsRemaining: number | null;
  rateLimits: RateLimitState[];
}

/** `verify()` refused: `status` is what to answer the caller, `reason` why. */
export interface RefusedToken {
  valid: false;
  status: number;
  /** RFC 6750's error code ("invalid_token", "insufficient_scope"; "missing_token" when
   *  the request sent none), as in tallykey's own JSON body. */
  code: string;
  /** What the reason means (`REASONS`): "token_revoked", "scope_missing", … */
  kind: string;
  reason: string | null;
  message: string;
  hint: string | null;
  retryAfter: number | null;
  rateLimits: RateLimitState[];
}

export type Verification = VerifiedToken | RefusedToken;

export interface VerifyOptions {
  /** Scopes the request needs (all of them). */
  scopes?: string[] | string;
  /** The workspace (id or slug) the request is for: the scopes must be held there. */
  workspace?: string;
  /** What the request spends of the token's usage credits (default 1). */
  cost?: number;
  /** The caller's address (honoured only when the server trusts this client as a proxy). */
  clientIp?: string;
  userAgent?: string;
  /** The caller's whole Authorization header, instead of a bare secret (Bearer or Basic). */
  authorization?: string;
}
