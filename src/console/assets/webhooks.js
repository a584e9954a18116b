// Webhooks: the list with a create form (the new secret is shown once, with a copy button),
// and one webhook's page: edit its URL, filters and description, deactivate it, rotate its
// secret, send a test event, recover dead and parked deliveries in a window; its latest
// deliveries (newest first, paged by cursor), its latency histogram and failure classes over a
// chosen window, and its registry history: who changed what, when (never a secret).
import { api, get, query, enc } from "./api.js";
import { h, replace, when, table, field, message, link, deliveryHref, guarded } from "./dom.js";
import { pager } from "./deliveries.js";
import { svg } from "./overview.js";

const PAGE = 25;

// The latency histogram: one bar per duration bucket (an SVG drawn here), its counts in the
// bars' titles and in `data-total`.
export function histogram(buckets) {
  const [W, H, pad] = [600, 140, 20];
  const top = Math.max(1, ...buckets.map((b) => b.attempts));
  const bw = (W - pad) / buckets.length;
  const total = buckets.reduce((a, b) => a + b.attempts, 0);
  const name = (b) => (b.under_ms == null ? `≥ ${b.from_ms} ms` : `< ${b.under_ms} ms`);
  const short = (ms) => (ms >= 1000 ? `${ms / 1000}s` : `${ms}`);
  const label = (b) => (b.under_ms == null ? `≥${short(b.from_ms)}` : `<${short(b.under_ms)}`);
  const bars = buckets.flatMap((b, i) => {
    const x = pad + i * bw;
    const hgt = (b.attempts / top) * (H - 2 * pad);
    return [
      svg("rect", { class: "ok", x, y: H - pad - hgt, width: bw - 2, height: hgt },
        svg("title", {}, `${name(b)}: ${b.attempts} attempts`)),
      svg("text", { x, y: H - 4 }, label(b)),
    ];
  });
  return svg("svg", { class: "chart", id: "latency-histogram", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `Attempt durations: ${total} attempts`, "data-total": total },
  svg("text", { x: pad, y: 12 }, `max ${top} attempts`), ...bars);
}

// What a registry change set, as text (never a secret: the API does not answer one).
function whatChanged(c) {
  const parts = [];
  if (c.url != null) parts.push(`url ${c.url}`);
  if (c.event_types != null) parts.push(`event types ${c.event_types.join(", ") || "all"}`);
  if (c.description != null) parts.push(`description ${c.description}`);
  if (c.active != null) parts.push(c.active ? "active" : "inactive");
  if (c.payload_format != null) parts.push(`payload ${c.payload_format}`);
  if (c.previous_secret_until != null) parts.push(["previous secret signs until ", when(c.previous_secret_until)]);
  if (c.details != null) parts.push(c.details);
  return parts.flatMap((p, i) => (i ? ["; ", p] : [p]));
}

const types = (s) => s.split(",").map((t) => t.trim()).filter(Boolean);

// A secret shown once, with a copy button.
function secretBox(label, secret) {
  const copy = h("button", { type: "button" }, "Copy");
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(secret); replace(copy, "Copied"); } catch {
      replace(copy, "Copy failed: select the text");
    }
  });
  return h("div", { role: "status" }, h("p", {}, label, " (shown only now):"),
    h("p", { class: "secret", id: "secret" }, secret), copy);
}

export async function renderList(main, ctx) {
  const url = h("input", { id: "new-url", name: "url", type: "url", required: true,
    placeholder: "https://example.com/hook" });
  const filter = h("input", { id: "new-types", name: "event_types", placeholder: "order, invoice.paid" });
  const description = h("input", { id: "new-description", name: "description" });
  const status = h("div", { id: "create-status" });
  const form = h("form", { id: "create-webhook", "aria-label": "Create a webhook" },
    field("URL", url), field("Event types (comma-separated, empty: all)", filter),
    field("Description", description), h("button", { type: "submit" }, "Create webhook"));
  const list = h("div", { id: "webhooks" });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const w = await api("POST", "/v1/webhooks", { url: url.value.trim(),
        event_types: types(filter.value), description: description.value.trim() || undefined });
      replace(status, message("notice", "Created "), link(`#/webhook/${enc(w.id)}`, w.id),
        secretBox("Its signing secret", w.secret));
      form.reset();
      await load();
    } catch (e) { replace(status, message("error", e.message)); }
  });
  replace(main, h("h1", {}, "Webhooks"), h("h2", {}, "Create"), form, status,
    h("h2", {}, "Registered"), list);
  async function load() {
    const data = await guarded(list, () => get("/v1/webhooks"));
    if (!data) return;
    replace(list, data.data.length === 0 ? h("p", {}, "No webhooks.") :
      table("Webhooks", ["Id", "App", "URL", "Event types", "Description", "Active", "Updated"],
        data.data.map((w) => [link(`#/webhook/${enc(w.id)}`, w.id), w.app, w.url,
          w.event_types.join(", ") || "all", w.description || "", w.active ? "yes" : "no",
          when(w.updated_at)])));
  }
  await load();
}

export async function renderOne(main, ctx, id) {
  const base = `/v1/webhooks/${enc(id)}`;
  const w = await get(base);
  const status = h("div", { id: "webhook-status" });
  const info = h("div", { id: "webhook-info" });
  const show = (w) => replace(info, h("p", {}, "App ", w.app, " · ", w.active ? "active" : "inactive",
    " · created ", when(w.created_at), " · updated ", when(w.updated_at)));
  show(w);
  const act = (label, idAttr, f) => {
    const b = h("button", { type: "button", id: idAttr }, label);
    b.addEventListener("click", async () => {
      try { await f(); } catch (e) { replace(status, message("error", e.message)); }
    });
    return b;
  };
  const url = h("input", { id: "edit-url", name: "url", type: "url", value: w.url, required: true });
  const filter = h("input", { id: "edit-types", name: "event_types", value: w.event_types.join(", ") });
  const description = h("input", { id: "edit-description", name: "description", value: w.description || "" });
  const edit = h("form", { id: "edit-webhook", "aria-label": "Edit the webhook" },
    field("URL", url), field("Event types", filter), field("Description", description),
    h("button", { type: "submit" }, "Save"));
  edit.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const changed = await api("PATCH", base, { url: url.value.trim(), event_types: types(filter.value),
        description: description.value.trim() || null });
      show(changed);
      replace(status, message("notice", "Saved."));
    } catch (e) { replace(status, message("error", e.message)); }
  });
  const since = h("input", { id: "recover-since", name: "since", placeholder: "2026-01-01T00:00:00Z" });
  const until = h("input", { id: "recover-until", name: "until", placeholder: "(now)" });
  const recover = h("form", { id: "recover", "aria-label": "Recover dead and parked deliveries" },
    field("Finished since (RFC 3339)", since), field("Until (optional)", until),
    h("button", { type: "submit" }, "Recover"));
  recover.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("POST", `${base}/recover`, { since: since.value.trim(),
        until: until.value.trim() || undefined });
      replace(status, message("notice", `Requeued ${r.requeued ?? JSON.stringify(r)}.`));
    } catch (e) { replace(status, message("error", e.message)); }
  });
  const recent = h("div", { id: "webhook-deliveries" });
  const pages = pager("webhook-deliveries", () => loadRecent());
  const latency = h("div", { id: "latency" });
  const classes = h("div", { id: "webhook-failure-classes" });
  const history = h("div", { id: "history" });
  const choose = h("select", { id: "webhook-window", name: "window" },
    ["hour", "day", "week"].map((v) => h("option", { value: v }, v)));
  choose.addEventListener("change", () => loadStats());
  replace(main, h("h1", {}, "Webhook ", h("code", {}, w.id)), info, status,
    h("div", { class: "actions" },
      act("Rotate secret", "rotate", async () => {
        const r = await api("POST", `${base}/rotate-secret`);
        replace(status, secretBox("The new signing secret", r.secret));
        await loadHistory();
      }), " ",
      act("Send test event", "send-test", async () => {
        const r = await api("POST", `${base}/test`);
        replace(status, message("notice", r.delivered ? "Test event delivered." : "Test event failed (it will be retried)."));
        await loadRecent();
      }), " ",
      act("Deactivate", "deactivate", async () => {
        if (!window.confirm("Deactivate this webhook? Its pending deliveries are parked.")) return;
        await api("DELETE", base);
        show(await get(base));
        replace(status, message("notice", "Deactivated."));
        await loadHistory();
      })),
    h("h2", {}, "Latest deliveries"), recent, pages.nav,
    h("h2", {}, "Attempts"), field("Window", choose), latency, classes,
    h("h2", {}, "Registry history"), history,
    h("h2", {}, "Edit"), edit, h("h2", {}, "Recover"), recover);
  async function loadRecent() {
    const q = query({ webhook_id: id, limit: PAGE, order: "newest", cursor: pages.cursor() });
    const page = await guarded(recent, () => get(`/v1/deliveries${q}`));
    if (!page) return;
    replace(recent, page.data.length === 0 ? h("p", {}, "No deliveries.") :
      table("Latest deliveries of this webhook", ["Event", "State", "Attempts", "Last status", "Enqueued seq", "Updated"],
        page.data.map((d) => [link(deliveryHref(d.webhook_id, d.event_id), d.event_id), d.state,
          String(d.attempts), d.last_status ?? d.last_error_class ?? "—", String(d.enqueued_seq),
          when(d.updated_at)])));
    pages.shown(page.next_cursor);
  }
  async function loadStats() {
    const q = query({ webhook_id: id, window: choose.value, until: new Date().toISOString() });
    const stats = await guarded(latency, () => get(`/v1/console/stats${q}`));
    if (!stats) return;
    replace(latency, histogram(stats.latency_histogram));
    const fc = Object.entries(stats.failure_classes);
    replace(classes, fc.length === 0 ? h("p", {}, `No failed attempts in the last ${choose.value}.`) :
      table("Failure classes of this webhook", ["Class", "Failed attempts"], fc.map(([c, n]) => [c, String(n)])));
  }
  async function loadHistory() {
    const data = await guarded(history, () => get(`${base}/history${query({ limit: 100 })}`));
    if (!data) return;
    // The actor: `operator`, `token:<id>`, `system:<what>`; "(not recorded)" for old changes.
    replace(history, table("Registry history", ["Seq", "Time", "By", "Change", "What it set", "Reason"],
      data.data.map((c) => [String(c.seq), when(c.recorded_at), c.actor ?? "(not recorded)", c.kind,
        whatChanged(c), c.reason ?? ""])),
    data.next_cursor ? h("p", {}, "(the first 100 changes)") : null);
  }
  const refresh = async () => { await loadRecent(); await loadStats(); await loadHistory(); };
  await refresh();
  return refresh;
}
