// tallykey for Node: verify tokens, manage them, and protect Express/Connect routes.
export { Tallykey, Tokens, VERSION } from "./client.js";
export type { TallykeyOptions, RequestOptions } from "./client.js";
export { TallykeyError } from "./errors.js";
export type { TallykeyErrorFields } from "./errors.js";
export { requireToken } from "./middleware.js";
export type { RequireTokenOptions, TallykeyRequest } from "./middleware.js";
export { REASONS, BY_STATUS, kindOf } from "./reasons.js";
export type {
  CamelCase, Camelized, IssuedToken, RateLimitState, RefusedToken, RevokedToken, SuspendedToken, Token,
  TokenCreate, TokenListQuery, TokenPage, TokenRenew, TokenUpdate, VerifiedToken, Verification, VerifyOptions,
  VerifyResponse,
} from "./types.js";
export type { components, operations, paths } from "./generated/openapi.js";
