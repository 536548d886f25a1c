// A real OpenID Provider for tallykey's single sign-on tests: panva/oidc-provider (an
// OpenID Certified implementation) with its development sign-in pages, configured from
// the environment: ISSUER, PORT, CLIENTS (JSON array), ACCOUNTS (JSON object: account id
// to claims), JWKS (JSON, the signing keys). Not a fake: discovery, PKCE, nonce, ID token
// signing and the JWKS endpoint are the library's own.
import Provider from 'oidc-provider';

const { ISSUER, PORT, CLIENTS, ACCOUNTS, JWKS } = process.env;
const accounts = JSON.parse(ACCOUNTS || '{}');

const provider = new Provider(ISSUER, {
  clients: JSON.parse(CLIENTS),
  jwks: JSON.parse(JWKS),
  cookies: { keys: ['tallykey-test-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    tallykey: ['tallykey_account', 'tallykey_role'],
  },
  scopes: ['openid', 'email', 'profile', 'tallykey'],
  conformIdTokenClaims: false, // the ID token carries the claims of the granted scopes
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
  async loadExistingGrant(ctx) {
    // consent is implied for these test clients: grant what they asked for
    const grant = new provider.Grant({ clientId: ctx.oidc.client.clientId,
                                       accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(ctx.oidc.params.scope);
    await grant.save();
    return grant;
  },
});

provider.listen(Number(PORT), '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${ISSUER}`);
});
