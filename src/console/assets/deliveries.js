// Deliveries: the list (filtered by state, webhook, event id and the window they were enqueued
// in, oldest or newest first, paged by the API's cursor: only one page is ever loaded) and one delivery's timeline (every record, redeliver, the
// published body pretty-printed).
import { api, get, query, enc } from "./api.js";
import { h, replace, when, table, field, message, pretty, link, deliveryHref, guarded } from "./dom.js";

const STATES = ["", "pending", "in_attempt", "delivered", "dead", "parked"];
const PAGE = 25;

// A time typed in the browser's zone (or with its own offset) as RFC 3339; what does not parse
// is passed on as typed, for the API to refuse naming the field.
export function rfc3339(text) {
  const s = text.trim();
  if (!s) return "";
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? s : d.toISOString();
}

// The pager: "previous" and "next" buttons made once (refreshes only show, hide or enable them,
// so a focused button keeps the focus), over the API's cursors.
export function pager(idPrefix, load) {
  const cursors = [null]; // the cursor of each page seen, for "previous"
  let page = 0;
  const label = h("span", { "aria-live": "polite" });
  const prev = h("button", { type: "button", id: `${idPrefix}-prev-page` }, "Previous page");
  const next = h("button", { type: "button", id: `${idPrefix}-next-page` }, "Next page");
  prev.addEventListener("click", () => { if (page > 0) { page -= 1; load(); } });
  next.addEventListener("click", () => { if (cursors[page + 1]) { page += 1; load(); } });
  const nav = h("nav", { class: "pager", "aria-label": "Pages" }, prev, " ", next, " ", label);
  return {
    nav,
    cursor: () => cursors[page],
    // After a page is shown: its `next_cursor`.
    shown(nextCursor) {
      cursors[page + 1] = nextCursor;
      prev.disabled = page === 0;
      next.disabled = !nextCursor;
      replace(label, `page ${page + 1}`);
    },
  };
}

export async function renderList(main, ctx, search) {
  const p = new URLSearchParams(search || "");
  const filters = { state: p.get("state") || "", webhook_id: p.get("webhook_id") || "",
    event_id: p.get("event_id") || "", since: p.get("since") || "", until: p.get("until") || "",
    order: p.get("order") || "" };
  const state = h("select", { name: "state", id: "f-state" },
    STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s || "any")));
  const webhook = h("input", { name: "webhook_id", id: "f-webhook", value: filters.webhook_id,
    placeholder: "webhook id" });
  const event = h("input", { name: "event_id", id: "f-event", value: filters.event_id,
    placeholder: "event id" });
  const since = h("input", { name: "since", id: "f-since", value: filters.since,
    placeholder: "2026-01-01 09:00", title: "In your time zone, or RFC 3339 with an offset (Z: UTC)" });
  const until = h("input", { name: "until", id: "f-until", value: filters.until,
    placeholder: "(now)", title: "In your time zone, or RFC 3339 with an offset (Z: UTC)" });
  const order = h("select", { name: "order", id: "f-order" },
    [["", "oldest first"], ["newest", "newest first"]].map(([v, t]) =>
      h("option", { value: v, selected: v === filters.order }, t)));
  const form = h("form", { id: "delivery-filters", "aria-label": "Filter deliveries" },
    field("State", state), field("Webhook", webhook), field("Event id", event),
    field("Enqueued since", since), field("Enqueued before", until), field("Order", order),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = `#/deliveries${query({ state: state.value, webhook_id: webhook.value.trim(),
      event_id: event.value.trim(), since: rfc3339(since.value), until: rfc3339(until.value),
      order: order.value })}`;
  });
  const out = h("div", { id: "deliveries" });
  const pages = pager("deliveries", () => load());
  replace(main, h("h1", {}, "Deliveries"), form, out, pages.nav);

  async function load() {
    const q = query({ ...filters, limit: PAGE, cursor: pages.cursor() });
    const data = await guarded(out, () => get(`/v1/deliveries${q}`));
    if (!data) return;
    replace(out, data.data.length === 0 ? h("p", {}, "No deliveries.") :
      table("Deliveries", ["Event", "App", "Webhook", "State", "Attempts", "Last status", "Updated"],
        data.data.map((d) => [
          link(deliveryHref(d.webhook_id, d.event_id), d.event_id), d.app,
          link(`#/webhook/${enc(d.webhook_id)}`, d.webhook_id.slice(0, 8)), d.state,
          String(d.attempts), d.last_status ?? d.last_error_class ?? "—", when(d.updated_at),
        ])));
    pages.shown(data.next_cursor);
  }
  await load();
  return load;
}

function countdown(due) {
  const s = Math.round((new Date(due) - Date.now()) / 1000);
  return s > 0 ? `in ${s} s` : "due now";
}

function describe(r) {
  switch (r.kind) {
    case "enqueued": return ["due ", when(r.due_at)];
    case "failed": return [r.error, r.next_due_at ? ["; next due ", when(r.next_due_at)] : null];
    case "dead_parked": case "parked": return r.reason;
    case "requeued": return [`from ${r.from}: ${r.reason}; due `, when(r.due_at)];
    default: return "";
  }
}

export async function renderOne(main, ctx, webhookId, eventId) {
  const path = `${enc(webhookId)}/${enc(eventId)}`;
  const head = h("div", { id: "delivery-head" });
  const records = h("div", { id: "records" });
  const status = h("div", { id: "delivery-status" });
  const body = h("pre", { id: "event-body", "aria-label": "Published body" });
  const eventType = h("code", { id: "event-type" });
  const redeliver = h("button", { type: "button", id: "redeliver" }, "Redeliver");
  redeliver.addEventListener("click", async () => {
    try {
      const r = await api("POST", `/v1/deliveries/${path}/redeliver`);
      replace(status, message("notice", `Requeued (record ${r.seq}).`));
      await load();
    } catch (e) { replace(status, message("error", e.message)); }
  });
  replace(main, h("h1", {}, "Delivery ", h("code", {}, eventId)), head, redeliver, status,
    h("h2", {}, "Timeline"), records, h("h2", {}, "Event ", eventType), body);

  const ev = await guarded(body, () => get(`/v1/console/events/${path}`));
  if (ev) {
    replace(eventType, ev.event_type);
    replace(body, ev.expunged ? "(the body was erased)" : pretty(ev.body));
  }

  async function load() {
    const t = await guarded(records, () => get(`/v1/deliveries/${path}`));
    if (!t) return;
    const last = t.records[t.records.length - 1];
    const due = t.state === "pending" && last ? (last.due_at || last.next_due_at) : null;
    replace(head, h("p", {}, "State ", h("strong", { id: "delivery-state" }, t.state),
      due ? [" · due ", when(due), " ", h("span", { id: "countdown" }, countdown(due))] : null,
      " · app ", t.app, " · webhook ", link(`#/webhook/${enc(t.webhook_id)}`, t.webhook_id)));
    redeliver.disabled = t.state === "pending" || t.state === "in_attempt";
    replace(records, table("Records",
      ["Seq", "Time", "Kind", "Attempt", "Status", "Error class", "Duration", "Detail", "Response body"],
      t.records.map((r) => [String(r.seq), when(r.recorded_at), r.kind, r.attempt ?? "",
        r.status ?? "", r.error_class ?? "", r.duration_ms != null ? `${r.duration_ms} ms` : "",
        describe(r), r.response_body != null ? h("pre", { class: "response" }, r.response_body) : ""])));
  }
  await load();
  return load;
}
