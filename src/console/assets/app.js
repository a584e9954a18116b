// The console's shell: sign-in, the top bar, the hash router and the live refresh. Each page
// module exports `render(main, ctx, params)` and may return a `refresh()` that the shell calls
// every few seconds while the page is open (polling; no reload), keeping the keyboard focus
// where it was (`keepingFocus`).
import { api, get, session, whenUnauthorized } from "./api.js";
import { h, replace, field, message, keepingFocus } from "./dom.js";
import * as overview from "./overview.js";
import * as deliveries from "./deliveries.js";
import * as webhooks from "./webhooks.js";
import * as timetravel from "./timetravel.js";

const REFRESH_MS = 2000;
const main = document.getElementById("main");
const bar = document.getElementById("bar");
let ctx = null; // { operator, app }
let timer = null;
let rendering = 0;

// [pattern, page, whether the captures are URI-encoded path segments to decode]
const ROUTES = [
  [/^#\/overview$/, overview.render],
  [/^#\/deliveries(?:\?(.*))?$/, deliveries.renderList, false],
  [/^#\/delivery\/([^/]+)\/([^/]+)$/, deliveries.renderOne],
  [/^#\/webhooks$/, webhooks.renderList],
  [/^#\/webhook\/([^/]+)$/, webhooks.renderOne],
  [/^#\/time$/, timetravel.render],
];

function signInPage(notice) {
  bar.hidden = true;
  const input = h("input", { id: "token", type: "password", name: "token", autocomplete: "off",
    required: true });
  const status = h("div", { id: "signin-status" }, notice ? message("error", notice) : null);
  const form = h("form", { id: "signin", "aria-label": "Sign in" },
    field("API token", input), h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    try {
      const who = await api("GET", "/v1/console/session", undefined, token);
      session.save(token);
      ctx = who;
      if (!location.hash || location.hash === "#/signin") location.hash = "#/overview";
      else route();
    } catch (e) {
      const text = e.status === 401 ? "Wrong token: the server did not accept it." : e.message;
      replace(status, message("error", text));
      input.select();
    }
  });
  replace(main, h("h1", {}, "Sign in to hookledger"),
    h("p", {}, "The token is kept for this browser tab only."), form, status);
  input.focus();
}

function signOut(notice) {
  session.clear();
  ctx = null;
  stopRefresh();
  signInPage(notice);
}

function stopRefresh() {
  if (timer) clearInterval(timer);
  timer = null;
}

async function route() {
  stopRefresh();
  if (!session.token()) return signInPage();
  if (!ctx) {
    try { ctx = await get("/v1/console/session"); } catch (e) {
      if (e.status !== 401) replace(main, message("error", e.message));
      return;
    }
  }
  bar.hidden = false;
  replace(document.getElementById("who"), ctx.operator ? "operator" : `app ${ctx.app}`);
  const hash = location.hash || "#/overview";
  const found = ROUTES.map(([re, page, decode]) => [hash.match(re), page, decode !== false])
    .find(([m]) => m);
  if (!found) { location.hash = "#/overview"; return; }
  const [m, page, decode] = found;
  const mine = ++rendering;
  replace(main);
  const params = m.slice(1).map((p) => (p === undefined || !decode ? p : decodeURIComponent(p)));
  let refresh;
  try { refresh = await page(main, ctx, ...params); } catch (e) {
    if (mine === rendering) replace(main, message("error", e.message));
    return;
  }
  if (mine !== rendering || typeof refresh !== "function") return;
  let busy = false;
  timer = setInterval(async () => {
    if (mine !== rendering || document.hidden || busy) return;
    busy = true;
    try { await keepingFocus(main, refresh); } catch (e) { console.warn("refresh failed:", e.message); }
    busy = false;
  }, REFRESH_MS);
}

whenUnauthorized(() => signOut("The session ended: the token is no longer accepted."));
document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
