// The overview: queue depth by state, the last hour's attempts per minute (an SVG drawn here),
// failure classes, the ledger head and the verify verdict (operator), and the webhooks with
// their success rate and latency over a chosen window. Refreshes itself (not verify: it reads
// the whole ledger, so it runs once when the page opens).
import { get, query, enc } from "./api.js";
import { h, replace, when, table, field, guarded, message } from "./dom.js";

const STATES = ["pending", "in_attempt", "delivered", "dead", "parked"];
const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return el;
}

// Attempts per minute over the hour ending at `until`: stacked bars, delivered under failed.
export function chart(perMinute, until) {
  const end = Math.floor(new Date(until).getTime() / 60000) * 60000;
  const byMinute = new Map(perMinute.map((m) => [m.minute_ms, m]));
  const minutes = [];
  for (let i = 59; i >= 0; i -= 1) {
    const t = end - i * 60000;
    minutes.push(byMinute.get(t) || { minute_ms: t, delivered: 0, failed: 0 });
  }
  const top = Math.max(1, ...minutes.map((m) => m.delivered + m.failed));
  const [W, H, pad] = [600, 160, 20];
  const bw = (W - pad) / 60;
  const scale = (n) => (n / top) * (H - 2 * pad);
  const total = minutes.reduce((a, m) => a + m.delivered + m.failed, 0);
  const bars = minutes.flatMap((m, i) => {
    const x = pad + i * bw;
    const ok = scale(m.delivered);
    const bad = scale(m.failed);
    const tip = `${new Date(m.minute_ms).toLocaleTimeString()}: ${m.delivered} delivered, ${m.failed} failed`;
    return [
      svg("rect", { class: "ok", x, y: H - pad - ok, width: bw - 1, height: ok }, svg("title", {}, tip)),
      svg("rect", { class: "bad", x, y: H - pad - ok - bad, width: bw - 1, height: bad }, svg("title", {}, tip)),
    ];
  });
  return svg("svg", { class: "chart", id: "attempts-chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `Attempts per minute over the last hour: ${total} in all`, "data-total": total },
  svg("text", { x: pad, y: 12 }, `max ${top} a minute`),
  svg("text", { x: pad, y: H - 4 }, "60 min ago"), svg("text", { x: W - 30, y: H - 4 }, "now"),
  ...bars);
}

export async function render(main, ctx) {
  let windowName = "hour";
  const counts = h("div", { class: "cards", id: "counts" });
  const graph = h("div", { id: "chart" });
  const classes = h("div", { id: "failure-classes" });
  const ledger = h("div", { id: "ledger" });
  const hooks = h("div", { id: "webhook-stats" });
  const choose = h("select", { id: "window", name: "window" },
    ["hour", "day", "week"].map((w) => h("option", { value: w }, w)));
  choose.addEventListener("change", () => { windowName = choose.value; refresh(); });
  replace(main, h("h1", {}, "Overview"), h("h2", {}, "Queue"), counts,
    h("h2", {}, "Attempts per minute, last hour"),
    h("p", { class: "legend" }, h("span", { class: "ok" }, "■ delivered"), " ",
      h("span", { class: "bad" }, "■ failed")), graph,
    h("h2", {}, "Failure classes"), classes,
    ctx.operator ? [h("h2", {}, "Ledger"), ledger] : null,
    h("h2", {}, "Webhooks"), field("Window", choose), hooks);

  if (ctx.operator) {
    const verdict = h("p", { id: "verify" }, "verifying…");
    const headLine = h("p", { id: "head" });
    replace(ledger, headLine, verdict);
    get("/v1/verify").then((v) => replace(verdict, v.ok ? "✔ " : "✘ ", v.verdict))
      .catch((e) => replace(verdict, message("error", e.message)));
    ledger.headLine = headLine;
  }

  async function refresh() {
    const state = await guarded(counts, () => get("/v1/state"));
    if (state) {
      replace(counts, STATES.map((s) => h("div", { class: "card", "data-state": s },
        h("b", { id: `count-${s}` }, String(state.counts[s] ?? 0)), s)));
    }
    const until = new Date().toISOString();
    const stats = await guarded(graph, () => get(`/v1/console/stats${query({ window: windowName, until })}`));
    if (stats) {
      replace(graph, chart(stats.per_minute, stats.until));
      const fc = Object.entries(stats.failure_classes);
      replace(classes, fc.length === 0 ? h("p", {}, `No failed attempts in the last ${windowName}.`) :
        table("Failure classes", ["Class", "Failed attempts"], fc.map(([c, n]) => [c, String(n)])));
    }
    if (ctx.operator) {
      const head = await guarded(ledger.headLine, () => get("/v1/ledger/head"));
      if (head) replace(ledger.headLine, "Head: record ", h("strong", { id: "head-seq" }, String(head.seq)),
        " committed ", when(head.committed_at), " · anchor ", h("code", {}, head.anchor));
    }
    const list = await guarded(hooks, () => get("/v1/webhooks"));
    if (list && stats) {
      const byId = new Map(stats.webhooks.map((w) => [w.webhook_id, w]));
      const ms = (x) => (x == null ? "—" : `${Math.round(x)} ms`);
      replace(hooks, list.data.length === 0 ? h("p", {}, "No webhooks.") :
        table("Webhooks", ["Webhook", "App", "URL", "Active", "Attempts", "Success", "p50", "p99", "Last failure"],
          list.data.map((w) => {
            const s = byId.get(w.id) || {};
            return [h("a", { href: `#/webhook/${enc(w.id)}` }, w.description || w.id.slice(0, 8)),
              w.app, w.url, w.active ? "yes" : "no", String(s.attempts ?? 0),
              s.attempts ? `${Math.round(s.success_rate * 100)} %` : "—", ms(s.p50_ms), ms(s.p99_ms),
              s.last_failure_ms ? when(s.last_failure_ms) : "—"];
          })));
    }
  }
  await refresh();
  return refresh;
}
