// Time travel: pick an instant on a slider over the ledger's time range (or type it) and see
// the queue as it was then, from `/v1/state?at=` (counts by state and the live deliveries).
import { get, query, enc } from "./api.js";
import { h, replace, when, table, field, guarded, message, link } from "./dom.js";

const STATES = ["pending", "in_attempt", "delivered", "dead", "parked"];

export async function render(main) {
  const out = h("div", { id: "then" });
  const first = await get("/v1/ledger?limit=1");
  if (first.data.length === 0) {
    replace(main, h("h1", {}, "Time travel"), h("p", {}, "The ledger has no records yet."));
    return undefined;
  }
  // At least one second before the first record, so the slider's start shows the empty queue,
  // and whole steps from the end: a range input snaps to `min` plus whole steps, so with any
  // other start its far right stood up to a second before now and missed the newest records.
  const end = Date.now();
  const span = Math.ceil((end - new Date(first.data[0].recorded_at).getTime()) / 1000) * 1000;
  const start = end - span - 1000;
  const slider = h("input", { id: "at-slider", type: "range", name: "at-slider", min: start, max: end,
    step: 1000, value: end });
  const text = h("input", { id: "at-text", name: "at", value: new Date(end).toISOString() });
  const form = h("form", { id: "time-travel", "aria-label": "Choose an instant" },
    h("label", { class: "range" }, "Instant", slider), field("Instant (RFC 3339)", text),
    h("button", { type: "submit" }, "Show"));
  let seq = 0;
  async function show(iso) {
    const mine = ++seq;
    const view = await guarded(out, () => get(`/v1/state${query({ at: iso })}`));
    if (!view || mine !== seq) return;
    replace(out, h("p", {}, "As of record ", h("strong", { id: "then-seq" }, String(view.as_of_seq)),
      " (", when(view.as_of), ")"),
    h("div", { class: "cards" }, STATES.map((s) => h("div", { class: "card" },
      h("b", { id: `then-${s}` }, String(view.counts[s] ?? 0)), s))),
    h("h2", {}, "Live deliveries then"),
    view.live.length === 0 ? h("p", { id: "then-none" }, "None.") :
      table("Live deliveries then", ["Webhook", "Event key", "State", "Attempts", "Due"],
        view.live.map((r) => [link(`#/webhook/${enc(r.webhook_id)}`, r.webhook_id), r.event_id, r.state,
          String(r.attempts), when(r.due_at)])));
  }
  slider.addEventListener("input", () => {
    text.value = new Date(Number(slider.value)).toISOString();
    show(text.value);
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = new Date(text.value.trim());
    if (Number.isNaN(t.getTime())) { replace(out, message("error", "Not a time: use RFC 3339.")); return; }
    slider.value = String(t.getTime());
    show(t.toISOString());
  });
  replace(main, h("h1", {}, "Time travel"), form, out);
  await show(text.value);
  return undefined;
}
