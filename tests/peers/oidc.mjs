// A real OpenID Connect provider for Tarn's sign-in tests: `oidc-provider` (npm, the certified
// implementation) with two accounts (alice in group `ml-team`, bob in `other`; any password),
// the authorization-code flow with PKCE and the device-authorization flow, and two clients:
// `tarn` (Tarn's) and `other-app` (whose ID tokens Tarn must refuse).
//
// Its signing keys live in $OIDC_KEYS (made on first start: `k1`, `k2`); $OIDC_SIGN_WITH names
// the keys it publishes, the first signing (`k1`, then `k2,k1` after a rotation).
// `POST /test/next-id-token?mode=expired|wrong-aud|tampered|wrong-nonce|wrong-iss|unpublished-key`
// spoils the next ID token the token endpoint returns, as a broken or hostile provider would.
//
//   OIDC_PORT=… TARN_REDIRECT=http://…/login/oidc/callback OIDC_KEYS=keys.json node oidc.mjs

import Provider from 'oidc-provider';
import * as jose from 'jose';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const port = Number(env('OIDC_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const keysFile = env('OIDC_KEYS');

if (!existsSync(keysFile)) {
  const keys = [];
  for (const kid of ['k1', 'k2']) {
    const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
    keys.push({ ...(await jose.exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' });
  }
  writeFileSync(keysFile, JSON.stringify(keys));
}
const allKeys = JSON.parse(readFileSync(keysFile, 'utf8'));
const published = (process.env.OIDC_SIGN_WITH || 'k1')
  .split(',')
  .map((kid) => allKeys.find((k) => k.kid === kid));

const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Liddell', groups: ['ml-team'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob Builder', groups: ['other'] },
};

const redirect = env('TARN_REDIRECT');
const client = (id, secret) => ({
  client_id: id,
  client_secret: secret,
  redirect_uris: [redirect],
  grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
});

const provider = new Provider(issuer, {
  clients: [client('tarn', 'tarn-secret'), client('other-app', 'other-secret')],
  async findAccount(ctx, id) {
    if (!accounts[id]) return undefined;
    return { accountId: id, claims: async () => ({ sub: `${id}-sub`, ...accounts[id] }) };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
  pkce: { required: () => true },
  jwks: { keys: published },
  cookies: { keys: ['tarn-test-cookie-key'] },
});

let spoil = null;
provider.use(async (ctx, next) => {
  if (ctx.path === '/test/next-id-token' && ctx.method === 'POST') {
    spoil = ctx.query.mode;
    ctx.body = { spoiling: spoil };
    return;
  }
  await next();
  if (ctx.path === '/token' && spoil && ctx.body && ctx.body.id_token) {
    const mode = spoil;
    spoil = null;
    const claims = jose.decodeJwt(ctx.body.id_token);
    const now = Math.floor(Date.now() / 1000);
    if (mode === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
    if (mode === 'wrong-aud') claims.aud = 'other-app';
    if (mode === 'wrong-nonce') claims.nonce = 'not-the-nonce';
    if (mode === 'wrong-iss') claims.iss = 'http://evil.example';
    // `unpublished-key`: signed with a key of the provider's that it does not publish.
    const signer = mode === 'unpublished-key'
      ? allKeys.find((k) => !published.some((p) => p.kid === k.kid))
      : published[0];
    const key = await jose.importJWK(signer, 'RS256');
    let token = await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: signer.kid })
      .sign(key);
    if (mode === 'tampered') {
      const [h, , s] = token.split('.');
      const forged = Buffer.from(JSON.stringify({ ...claims, sub: 'admin' })).toString('base64url');
      token = `${h}.${forged}.${s}`;
    }
    ctx.body = { ...ctx.body, id_token: token };
  }
});

provider.listen(port, '127.0.0.1', () => console.log(`oidc: listening on ${issuer}`));
