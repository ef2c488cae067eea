#!/usr/bin/env node
// Sync your organization's users from auth0-m2m-proxy: an edge client to copy (Node.js 20+,
// no packages: the global fetch only).
//
// 1. Get an M2M access token from your Auth0 tenant (client credentials, `audience` = the
//    proxy's API), and keep it until shortly before it expires.
// 2. List every member of your organization through the proxy, page by page (`GET /users` with
//    Auth0's checkpoint paging: `take`, then `from` = the previous page's `next`).
// 3. Read one member's full profile (`GET /users/{id}`).
//
// Every call to the proxy is retried when the proxy says "later" (429/503 with Retry-After), a
// bounded number of times, and repeated once with a new token after a 401.
//
// Settings come from the command line or the environment (`--help` lists both). For a private
// CA, start Node with NODE_EXTRA_CA_CERTS=/path/to/ca.pem (read once, at start). Prints one
// line per member (`user_id<TAB>email`), the profile read, and a count; retries are told on
// stderr. Exits 1 if anything fails.

import { parseArgs } from "node:util";

const TIMEOUT_MS = 60_000; // for each request, answer included
const MAX_ATTEMPTS = 5; // tries per call to the proxy while it answers 429/503
const MAX_WAIT_S = 60; // never wait longer than this between two tries

class Failure extends Error {}

// An M2M token for the proxy's API, fetched once and reused until shortly before expiry.
class TokenSource {
  constructor({ domain, clientId, clientSecret, audience, organization }) {
    this.url = `https://${domain}/oauth/token`;
    this.form = {
      grant_type: "client_credentials",
      client_id: clientId,
      client_secret: clientSecret,
      audience,
    };
    // A client of several organizations names the one it wants.
    if (organization) this.form.organization = organization;
    this.token = null;
    this.renewAt = 0; // performance.now() after which the token is fetched again
  }

  async get() {
    if (this.token === null || performance.now() >= this.renewAt) await this.refresh();
    return this.token;
  }

  async refresh() {
    const answer = await fetch(this.url, {
      method: "POST",
      body: new URLSearchParams(this.form), // application/x-www-form-urlencoded
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    if (answer.status !== 200) {
      throw new Failure(`token request: ${answer.status} ${(await answer.text()).slice(0, 200)}`);
    }
    const body = await answer.json();
    const lifetime = Number(body.expires_in ?? 3600);
    this.token = body.access_token;
    // Renew a minute early (or at half-life for short-lived tokens): no call is ever sent with
    // a token that expires on the way.
    this.renewAt = performance.now() + (lifetime - Math.min(60, lifetime / 2)) * 1000;
  }
}

// GETs to the proxy with the token, retrying what is worth retrying.
class Proxy {
  constructor(baseUrl, tokens) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.tokens = tokens;
  }

  async get(path, params = {}) {
    const url = `${this.baseUrl}${path}?${new URLSearchParams(params)}`.replace(/\?$/, "");
    let refreshed = false;
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      const answer = await fetch(url, {
        headers: { Authorization: `Bearer ${await this.tokens.get()}` },
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      if (answer.status === 401 && !refreshed) {
        // Revoked keys, a clock off: fetch a new token, once, and try again.
        await answer.body?.cancel(); // free the connection for reuse
        await this.tokens.refresh();
        refreshed = true;
        continue;
      }
      if ((answer.status === 429 || answer.status === 503) && attempt < MAX_ATTEMPTS) {
        // 429: this client's rate limit, or the proxy's share of Auth0's is spent;
        // 503: the proxy waits for Auth0. Either way Retry-After says how long.
        await answer.body?.cancel();
        const wait = retryAfter(answer);
        log(`${answer.status} on ${path}: retrying in ${wait}s (${attempt})`);
        await new Promise((resolve) => setTimeout(resolve, wait * 1000));
        continue;
      }
      if (answer.status !== 200) {
        throw new Failure(`GET ${path}: ${answer.status} ${await errorMessage(answer)}`);
      }
      return answer.json();
    }
    throw new Failure(`GET ${path}: still refused after ${MAX_ATTEMPTS} tries`);
  }
}

// Retry-After in seconds (a number, or an HTTP date), 1 if absent, at most MAX_WAIT_S.
function retryAfter(answer) {
  const value = answer.headers.get("Retry-After") ?? "1";
  let seconds = Number(value);
  if (Number.isNaN(seconds)) seconds = (Date.parse(value) - Date.now()) / 1000;
  if (Number.isNaN(seconds)) seconds = 1;
  return Math.min(Math.max(seconds, 0), MAX_WAIT_S);
}

// The proxy answers errors in the Management API's shape: {"errorCode", "message", ...}.
async function errorMessage(answer) {
  const text = await answer.text();
  try {
    const body = JSON.parse(text);
    if (body.errorCode) return `${body.errorCode}: ${body.message}`;
  } catch {
    // not JSON: show the start of it
  }
  return text.slice(0, 200);
}

// Every member, following the pages until one comes without `next`. Each page is a small call
// of its own, so a retry repeats one page, not the whole list.
async function allMembers(proxy, pageSize) {
  const members = [];
  let params = { take: pageSize };
  for (;;) {
    const page = await proxy.get("/users", params);
    members.push(...page.members);
    if (!page.next) return members;
    params = { take: pageSize, from: page.next };
  }
}

function log(message) {
  console.error(message);
}

const OPTIONS = {
  domain: ["AUTH0_DOMAIN", "the tenant's domain, e.g. your-tenant.eu.auth0.com"],
  "client-id": ["AUTH0_CLIENT_ID", "this edge client's id"],
  "client-secret": ["AUTH0_CLIENT_SECRET", "its secret"],
  audience: ["PROXY_AUDIENCE", "the proxy's API identifier"],
  "proxy-url": ["PROXY_URL", "e.g. https://proxy.example.com"],
  organization: ["AUTH0_ORGANIZATION", "optional: the organization the token is for"],
  "page-size": ["PAGE_SIZE", "members per page, 1-100 (default 50)"],
};
const REQUIRED = ["domain", "client-id", "client-secret", "audience", "proxy-url"];

function settings(argv) {
  const options = { help: { type: "boolean" } };
  for (const name of Object.keys(OPTIONS)) options[name] = { type: "string" };
  const { values } = parseArgs({ args: argv, options });
  if (values.help) {
    console.log("usage: node sync-users.mjs [options]");
    for (const [name, [env, text]] of Object.entries(OPTIONS)) {
      console.log(`  --${name}  [${env}]  ${text}`);
    }
    console.log("  For a private CA: NODE_EXTRA_CA_CERTS=/path/to/ca.pem");
    process.exit(0);
  }
  const config = {};
  for (const [name, [env]] of Object.entries(OPTIONS)) {
    config[name] = values[name] ?? process.env[env];
  }
  const missing = REQUIRED.filter((name) => !config[name]);
  if (missing.length) {
    log(`missing: ${missing.map((name) => `--${name}`).join(", ")} (see --help)`);
    process.exit(2);
  }
  return {
    domain: config.domain.replace(/^https:\/\//, "").replace(/\/+$/, ""), // bare, as Auth0 shows it
    clientId: config["client-id"],
    clientSecret: config["client-secret"],
    audience: config.audience,
    organization: config.organization,
    proxyUrl: config["proxy-url"],
    pageSize: Number(config["page-size"] ?? 50),
  };
}

async function main() {
  const config = settings(process.argv.slice(2));
  const proxy = new Proxy(config.proxyUrl, new TokenSource(config));
  try {
    const members = await allMembers(proxy, config.pageSize);
    for (const member of members) console.log(`${member.user_id}\t${member.email ?? ""}`);
    if (members.length) {
      const first = members[0].user_id;
      const profile = await proxy.get(`/users/${encodeURIComponent(first)}`); // "|", "/" encoded
      console.log(`profile of ${first}: ${profile.name} <${profile.email}>`);
    }
    console.log(`synced ${members.length} members`);
    return 0;
  } catch (error) {
    // Failure: an answer we cannot get past; TypeError/AbortError: no answer (TLS, DNS, timeout).
    const cause = error.cause ? ` (${error.cause.message ?? error.cause})` : "";
    log(`sync failed: ${error.message}${cause}`);
    return 1;
  }
}

process.exitCode = await main();
