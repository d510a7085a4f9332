// An OpenID provider for Colink's single sign-on tests, standing in for
// Keycloak: oidc-provider with its development login form (any login name,
// any password), consent given up front, and access tokens issued as JWTs
// that carry Keycloak's claims (preferred_username, email, name,
// realm_access.roles).
//
//   node provider.mjs --port 9000 --generation 1 --redirect-uri http://...
//
// The signing keys (RS256, ES256, EdDSA) are made at start; their ids name
// the generation, so restarting with another generation rotates them.
// Resource indicators choose what an access token looks like:
//   urn:colink:rs256 | urn:colink:es256 | urn:colink:eddsa  audience "colink"
//   urn:colink:short   audience "colink", ES256, lives 2 seconds
//   urn:other          audience "other"
// Logins map to workspace roles by name: "admin..." gets colink-admin,
// "mod..." colink-moderator, "guest..." colink-guest, others none.
import { generateKeyPairSync } from 'node:crypto';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    generation: { type: 'string', default: '1' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
  },
});
const port = Number(args.port);
const issuer = `http://127.0.0.1:${port}`;
const generation = args.generation;

function privateJwk(kid, type, options) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig' };
}
const keys = [
  { ...privateJwk(`rs-${generation}`, 'rsa', { modulusLength: 2048 }), alg: 'RS256' },
  { ...privateJwk(`es-${generation}`, 'ec', { namedCurve: 'P-256' }), alg: 'ES256' },
  { ...privateJwk(`ed-${generation}`, 'ed25519'), alg: 'EdDSA' },
];

const resources = {
  'urn:colink:rs256': { audience: 'colink', alg: 'RS256', ttl: 300 },
  'urn:colink:es256': { audience: 'colink', alg: 'ES256', ttl: 300 },
  'urn:colink:eddsa': { audience: 'colink', alg: 'EdDSA', ttl: 300 },
  'urn:colink:short': { audience: 'colink', alg: 'ES256', ttl: 2 },
  'urn:other': { audience: 'other', alg: 'ES256', ttl: 300 },
};

function rolesOf(login) {
  if (login.startsWith('admin')) return ['colink-admin', 'offline_access'];
  if (login.startsWith('mod')) return ['colink-moderator', 'offline_access'];
  if (login.startsWith('guest')) return ['colink-guest', 'offline_access'];
  return ['offline_access'];
}

function claimsOf(login) {
  return {
    sub: `sub-${login}`,
    preferred_username: login,
    email: `${login}@example.test`,
    email_verified: true,
    name: login.charAt(0).toUpperCase() + login.slice(1),
    realm_access: { roles: rolesOf(login) },
  };
}

// Account ids are the subjects; the login name is what follows "sub-".
const loginOf = (accountId) => accountId.replace(/^sub-/, '');

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'colink',
      client_secret: 'colink-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: args['redirect-uri'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
    {
      client_id: 'colink-cli',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  jwks: { keys },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'realm_access'],
  },
  conformIdTokenClaims: false,
  cookies: { keys: ['colink-test-cookie-key'] },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:colink:rs256',
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => {
        const resource = resources[indicator];
        if (!resource) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'openid',
          audience: resource.audience,
          accessTokenTTL: resource.ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: resource.alg } },
        };
      },
    },
  },
  findAccount: (_ctx, accountId) => ({
    accountId,
    claims: () => claimsOf(loginOf(accountId)),
  }),
  extraTokenClaims: (_ctx, token) => {
    if (!token.accountId) return undefined;
    const { sub: _sub, email_verified: _verified, ...claims } = claimsOf(loginOf(token.accountId));
    return claims;
  },
  // Every client is trusted with every scope: no consent screen.
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    for (const indicator of Object.keys(resources)) grant.addResourceScope(indicator, 'openid');
    await grant.save();
    return grant;
  },
  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
    AuthorizationCode: 60, IdToken: 300, Interaction: 300, Session: 3600, Grant: 3600 },
});
// The dev login form stores the login name as the account id; make it the
// subject the claims give.
const devFinish = provider.interactionFinished.bind(provider);
provider.interactionFinished = (req, res, result, options) => {
  if (result?.login?.accountId && !result.login.accountId.startsWith('sub-')) {
    result.login.accountId = `sub-${result.login.accountId}`;
  }
  return devFinish(req, res, result, options);
};
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
