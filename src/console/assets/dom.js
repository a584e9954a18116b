// Building the page. Every string goes in as a text node or an attribute value, never as
// markup: the console never parses data as HTML.

// h("a", {href: "#/x", onclick: f}, "text", child, [more]): an element.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A time in the browser's zone, with UTC on hover.
export function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return h("time", { datetime: d.toISOString(), title: `UTC: ${d.toISOString()}` },
    d.toLocaleString());
}

export function table(label, headers, rows) {
  return h("div", { class: "scroll" }, h("table", { "aria-label": label },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
}

export function field(labelText, input) {
  return h("label", {}, labelText, input);
}

// A message line: `kind` "error" or "notice".
export function message(kind, text) {
  return h("p", { class: kind, role: kind === "error" ? "alert" : "status" }, text);
}

// JSON text pretty-printed when it parses, else as it is.
export function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

export function link(href, text) { return h("a", { href }, text); }

export function deliveryHref(webhookId, eventId) {
  return `#/delivery/${encodeURIComponent(webhookId)}/${encodeURIComponent(eventId)}`;
}

// Runs `f` and shows its error in `where` instead of throwing.
export async function guarded(where, f) {
  try { return await f(); } catch (e) {
    replace(where, message("error", e.message));
    return undefined;
  }
}

// Runs `f` (which may redraw parts of `root`) and gives the focus back to the element that had
// it, or to its redrawn twin (same id, or a link to the same place), so that a refresh never
// takes the keyboard user's place away.
export async function keepingFocus(root, f) {
  const had = document.activeElement;
  const key = had && had !== document.body && root.contains(had) ? focusKey(had) : null;
  try { return await f(); } finally {
    if (key && !had.isConnected) {
      const twin = root.querySelector(key);
      if (twin) twin.focus({ preventScroll: true });
    }
  }
}

function focusKey(el) {
  if (el.id) return `#${CSS.escape(el.id)}`;
  const href = el.getAttribute("href");
  if (href) return `${el.tagName.toLowerCase()}[href="${CSS.escape(href)}"]`;
  return null;
}
