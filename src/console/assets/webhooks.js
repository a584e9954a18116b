// Webhooks: the list with a create form (the new secret is shown once, with a copy button),
// and one webhook's page: edit its URL, filters and description, deactivate it, rotate its
// secret, send a test event, recover dead and parked deliveries in a window, and its recent
// deliveries.
import { api, get, query, enc } from "./api.js";
import { h, replace, when, table, field, message, link, deliveryHref, guarded } from "./dom.js";

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
  replace(main, h("h1", {}, "Webhook ", h("code", {}, w.id)), info, status,
    h("div", { class: "actions" },
      act("Rotate secret", "rotate", async () => {
        const r = await api("POST", `${base}/rotate-secret`);
        replace(status, secretBox("The new signing secret", r.secret));
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
      })),
    h("h2", {}, "Edit"), edit, h("h2", {}, "Recover"), recover,
    h("h2", {}, "Deliveries (first 25 in enqueue order)"), recent);
  async function loadRecent() {
    const page = await guarded(recent, () => get(`/v1/deliveries${query({ webhook_id: id, limit: 25 })}`));
    if (!page) return;
    replace(recent, page.data.length === 0 ? h("p", {}, "No deliveries.") :
      table("Deliveries of this webhook", ["Event", "State", "Attempts", "Last status", "Updated"],
        page.data.map((d) => [link(deliveryHref(d.webhook_id, d.event_id), d.event_id), d.state,
          String(d.attempts), d.last_status ?? d.last_error_class ?? "—", when(d.updated_at)])));
  }
  await loadRecent();
  return loadRecent;
}
