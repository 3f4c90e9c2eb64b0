// A real browser through gatekeeper's sign-in page (tests/interop/oidc.sh drives it).
//
// Headless Debian Chromium under playwright-core opens START_URL (gatekeeper's /authorize for
// the test relying party, or Synapse's SSO redirect), types ADDRESS, reads the session code,
// writes it to CODE_FILE (the shell then sends the ministry's signed reply through Postfix),
// and waits, without touching the page, for the page's own polling to take it to the
// relying party: a callback server of ours on CALLBACK (host:port). axe-core scans the
// address page and the session-code page; a screenshot of the session-code page is saved
// to SCREENSHOT.
//
// MODE=rp: the callback is the client's redirect URI; the code is exchanged at /token
// (client_secret_basic, PKCE S256) and the ID token verified against the JWKS.
// MODE=synapse: the callback is the Matrix client's redirectUrl; the loginToken Synapse
// gives is exchanged at Synapse's /login for a Matrix access token and user id.
//
// Prints one JSON object on stdout; exits non-zero on any failure.

import { createRequire } from "node:module";
import { createServer } from "node:http";
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import { writeFileSync } from "node:fs";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`missing ${k}`);
  return v;
};
const require = createRequire(env("NODE_MODULES") + "/");
const { chromium } = require("playwright-core");
const AxeBuilder = require("@axe-core/playwright").default;

const MODE = env("MODE", "rp");
const ADDRESS = env("ADDRESS");
const CODE_FILE = env("CODE_FILE");
const SCREENSHOT = env("SCREENSHOT");
const [CB_HOST, CB_PORT] = env("CALLBACK").split(":");
const TIMEOUT = Number(env("TIMEOUT_MS", "120000"));
const log = (...a) => console.error(new Date().toISOString(), ...a);
const b64url = (b) => Buffer.from(b).toString("base64url");

// The relying party's redirect target: answer, and hand the URL to the test.
let landed;
const landedP = new Promise((r) => (landed = r));
const server = createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end('<!DOCTYPE html><html lang="en"><head><title>callback</title></head><body><main><h1>callback</h1></main></body></html>');
  landed(new URL(req.url, `http://${CB_HOST}:${CB_PORT}`));
});
await new Promise((r) => server.listen(Number(CB_PORT), CB_HOST, r));

let startUrl;
const verifier = b64url(randomBytes(32));
if (MODE === "rp") {
  const challenge = b64url(createHash("sha256").update(verifier).digest());
  const q = new URLSearchParams({
    response_type: "code",
    client_id: env("CLIENT_ID"),
    redirect_uri: `http://${CB_HOST}:${CB_PORT}/cb`,
    scope: "openid email",
    state: "browser-state",
    nonce: "browser-nonce",
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  startUrl = `${env("ISSUER")}/authorize?${q}`;
} else {
  startUrl = env("START_URL");
}

const result = { mode: MODE };
const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const failures = [];
try {
  const context = await browser.newContext({ locale: "fr-FR" });
  const page = await context.newPage();
  page.on("console", (m) => log("console:", m.type(), m.text()));
  page.on("pageerror", (e) => failures.push(`page error: ${e}`));
  const seenUrls = [];
  page.on("request", (r) => seenUrls.push(r.url()));

  log("open", startUrl);
  await page.goto(startUrl, { timeout: 30000 });
  await page.waitForSelector("#address", { timeout: 30000 });
  const axeAddress = await new AxeBuilder({ page }).analyze();
  result.axe_address = axeAddress.violations.map((v) => `${v.id}: ${v.help}`);

  await page.fill("#address", ADDRESS);
  await page.click("#send");
  await page.waitForSelector("#session-code", { timeout: 30000 });
  const code = (await page.textContent("#session-code")).trim();
  result.session_code_shown = /^\d{6}$/.test(code);
  const axePending = await new AxeBuilder({ page }).analyze();
  result.axe_pending = axePending.violations.map((v) => `${v.id}: ${v.help}`);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  result.page_url = page.url();
  result.page_has_token_address = (await page.content()).includes("confirm+");
  writeFileSync(CODE_FILE, code);
  log("session code on screen; waiting for the reply and the page's own redirect");

  const to = await Promise.race([
    landedP,
    new Promise((_, rej) => setTimeout(() => rej(new Error("no redirect to the client in time")), TIMEOUT)),
  ]);
  result.landed = `${to.origin}${to.pathname}`;
  result.urls = seenUrls.length;

  if (MODE === "rp") {
    const p = to.searchParams;
    result.state_ok = p.get("state") === "browser-state";
    result.iss_ok = p.get("iss") === env("ISSUER");
    const form = new URLSearchParams({
      grant_type: "authorization_code",
      code: p.get("code"),
      redirect_uri: `http://${CB_HOST}:${CB_PORT}/cb`,
      code_verifier: verifier,
    });
    const basic = Buffer.from(`${env("CLIENT_ID")}:${env("CLIENT_SECRET")}`).toString("base64");
    const r = await fetch(`${env("ISSUER")}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", authorization: `Basic ${basic}` },
      body: form,
    });
    const tok = await r.json();
    result.token_status = r.status;
    const [h, pl, sig] = tok.id_token.split(".");
    const header = JSON.parse(Buffer.from(h, "base64url"));
    const claims = JSON.parse(Buffer.from(pl, "base64url"));
    const jwks = await (await fetch(`${env("ISSUER")}/jwks.json`)).json();
    const jwk = jwks.keys.find((k) => k.kid === header.kid);
    const key = createPublicKey({ key: jwk, format: "jwk" });
    result.id_token_alg = header.alg;
    result.id_token_signature_valid = verify("RSA-SHA256", Buffer.from(`${h}.${pl}`), key, Buffer.from(sig, "base64url"));
    result.claims = claims;
  } else {
    const loginToken = to.searchParams.get("loginToken");
    const r = await fetch(`${env("SYNAPSE")}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "m.login.token", token: loginToken }),
    });
    const body = await r.json();
    result.login_status = r.status;
    result.user_id = body.user_id;
    result.has_access_token = typeof body.access_token === "string";
  }
} catch (e) {
  failures.push(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
  server.close();
}
result.failures = failures;
console.log(JSON.stringify(result));
process.exit(failures.length ? 1 : 0);
