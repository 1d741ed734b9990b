// The search page: a search view over POST /search with the passage context from GET /passages/{id}/context,
// and a datastore view from GET /stats, GET /inspect and GET /inspect/plot. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const STOPWORDS = new Set("a an and are as at be by for from how in is it of on or that the this to was what when where which who why with".split(" "));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// One request to the API: its JSON, or an Error with the server's one-line message (or why the server could not be reached).
async function api(path, body) {
  let response;
  try {
    response = await fetch(path, body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  let data = null;
  try { data = await response.json(); } catch (err) { /* a reply that is not JSON: described by its status below */ }
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}: ${data && data.error ? data.error : "no message"}`);
  return data;
}

function showError(box, message) {
  box.textContent = message ? `Request failed — ${message}` : "";
  box.hidden = !message;
}

// ---- views: two tabs, arrow keys move between them ----
const TABS = [$("tab-search"), $("tab-datastore")];
function select(tab) {
  for (const t of TABS) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (tab.id === "tab-datastore") loadDatastore();
}
for (const tab of TABS) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
    const next = TABS[(TABS.indexOf(tab) + (event.key === "ArrowRight" ? 1 : TABS.length - 1)) % TABS.length];
    select(next);
    next.focus();
  });
}

// ---- search ----
function terms(query) {
  const words = query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  return [...new Set(words.filter((w) => w.length > 1 && !STOPWORDS.has(w)))];
}

// ``text`` as text nodes, with the words that start with a query term in <mark>.
function highlighted(text, words) {
  const out = document.createDocumentFragment();
  if (!words.length) { out.append(text); return out; }
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(?:${escaped.join("|")})[\\p{L}\\p{N}]*`, "giu");
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    out.append(text.slice(last, match.index), el("mark", {}, match[0]));
    last = match.index + match[0].length;
  }
  out.append(text.slice(last));
  return out;
}

const number = (value, digits = 3) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));

function hitItem(hit, rank, words) {
  const scores = [el("span", {}, "score ", el("b", {}, number(hit.score)))];
  if (hit.dense_score !== undefined) scores.push(el("span", {}, "dense ", el("b", {}, number(hit.dense_score))));
  if (hit.sparse_score !== undefined) scores.push(el("span", {}, "BM25 ", el("b", {}, number(hit.sparse_score, 2))));
  const contextId = `context-${hit.passage_id}`;
  const toggle = el("button", {type: "button", class: "toggle", "aria-expanded": "false", "aria-controls": contextId}, "Show context");
  const context = el("div", {id: contextId, class: "context", hidden: ""});
  toggle.addEventListener("click", () => toggleContext(toggle, context, hit.passage_id, words));
  return el("li", {class: "hit", "data-passage-id": hit.passage_id},
    el("div", {class: "hit-head"}, el("span", {class: "rank"}, `#${rank}`), el("h3", {}, hit.title || "(untitled)")),
    el("div", {class: "meta"}, ...scores, el("span", {}, "domain ", el("b", {}, hit.domain)), el("span", {}, "document ", el("b", {}, hit.doc_id)),
       el("span", {}, "passage ", el("b", {}, hit.passage_id))),
    el("p", {class: "passage"}, highlighted(hit.text, words)),
    toggle, context);
}

async function toggleContext(toggle, box, passageId, words) {
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  toggle.textContent = open ? "Hide context" : "Show context";
  box.hidden = !open;
  if (!open || box.dataset.loaded) return;
  box.textContent = "Loading the passages around it…";
  try {
    const ctx = await api(`/passages/${passageId}/context`);
    const part = (title, passage, cls, none) => [el("h4", {}, title),
      passage ? el("p", {class: `passage ${cls}`}, highlighted(passage.text, words)) : el("p", {class: "none"}, none)];
    box.replaceChildren(...part("Previous passage", ctx.previous, "prev", "none: the document starts here"),
                        ...part("This passage", ctx.passage, "this"), ...part("Next passage", ctx.next, "next", "none: the document ends here"));
    box.dataset.loaded = "1";
  } catch (err) {
    box.replaceChildren(el("p", {class: "error", role: "alert"}, `Request failed — ${err.message}`));
  }
}

function request(query) {
  const body = {query, n_docs: Number($("k").value) || 10, seed: Number($("seed").value) || 0, dedup: $("dedup").checked};
  const optional = {mode: $("mode").value, fusion: $("fusion").value, alpha: $("alpha").value, fraction: $("fraction").value, mmr: $("mmr").value};
  for (const [name, value] of Object.entries(optional)) {
    if (value === "") continue;
    body[name] = ["alpha", "fraction", "mmr"].includes(name) ? Number(value) : value;
  }
  const domains = [...document.querySelectorAll("#domains input:checked")].map((box) => box.value);
  if (domains.length) body.domains = domains;
  return body;
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("q").value.trim();
  showError($("error"), "");
  if (!query) { showError($("error"), "type a query first"); $("q").focus(); return; }
  $("status").textContent = "Searching…";
  $("results").replaceChildren();
  try {
    const reply = await api("/search", request(query));
    const hits = reply.results.hits[0];
    const words = terms(query);
    $("results").replaceChildren(...hits.map((hit, i) => hitItem(hit, i + 1, words)));
    const skipped = Object.keys(reply.skipped_shards);
    $("status").textContent = `${hits.length} passages in ${number(reply.took_ms, 1)} ms` + (skipped.length ? `; shards skipped: ${skipped.join(", ")}` : "");
  } catch (err) {
    $("status").textContent = "";
    showError($("error"), err.message);
  }
});

// ---- datastore ----
const bytes = (n) => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
};
const count = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
const totalBytes = (b) => Object.values(b || {}).reduce((a, v) => a + v, 0);

function card(title, rows) {
  return el("section", {class: "card"}, el("h2", {}, title),
    el("dl", {}, ...rows.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])));
}

function tableOf(caption, headers, rows, numeric) {
  const head = el("tr", {}, ...headers.map((h, i) => el("th", {scope: "col", class: numeric[i] ? "num" : ""}, h)));
  const body = rows.map((row) => el("tr", {}, ...row.map((cell, i) => (cell instanceof Node ? el("td", {}, cell) : el("td", {class: numeric[i] ? "num" : ""}, cell)))));
  return el("table", {}, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, ...body));
}

let datastoreLoaded = false;
async function loadDatastore() {
  if (datastoreLoaded) return;
  showError($("datastore-error"), "");
  try {
    const [stats, inspect] = await Promise.all([api("/stats"), api("/inspect")]);
    const e = stats.embedder, ix = stats.index;
    const status = Object.fromEntries(stats.shards.map((s) => [s.name, s]));
    const cards = el("div", {class: "cards"},
      card("Datastore", [["name", stats.name], ["passages", count(stats.passages)], ["documents kept", count(stats.documents_kept)],
                         ["created", stats.created], ["on disk", bytes(inspect.shards.reduce((a, s) => a + totalBytes(s.bytes), 0))]]),
      card("Embedder", [["model", e.model], ["kind", e.kind], ["dimensions", e.dim], ["similarity", e.similarity], ["max length", e.max_length]]),
      card("Index", [["type", ix.type], ["factory", ix.factory], ["lists (nlist)", ix.nlist], ["PQ m", ix.pq_m], ["nprobe", ix.nprobe],
                     ["BM25", inspect.sparse ? "yes" : "no"]]));
    const domains = tableOf("Domains", ["domain", "documents", "passages", "tokens", "on disk"],
      Object.entries(inspect.domains).map(([name, d]) => [name, count(d.documents), count(d.passages), count(d.tokens), bytes(totalBytes(d.bytes))]),
      [false, true, true, true, true]);
    const shards = tableOf("Shards", ["shard", "domain", "passages", "deleted", "passages file", "index", "vectors", "BM25", "status"],
      inspect.shards.map((s) => [s.name, s.domain, count(s.passages), count(s.deleted), bytes(s.bytes.passages), bytes(s.bytes.index),
        bytes(s.bytes.vectors), bytes(s.bytes.sparse),
        el("span", {class: `status-${(status[s.name] || {}).status || "ok"}`}, (status[s.name] || {}).reason || (status[s.name] || {}).status || "ok")]),
      [false, false, true, true, true, true, true, true, false]);
    const drops = Object.entries(stats.dropped).sort((a, b) => b[1] - a[1]);
    const dropped = drops.length ? tableOf("Dropped by the build", ["reason", "documents"], drops.map(([r, n]) => [r, count(n)]), [false, true])
                                 : el("p", {}, "The build dropped nothing.");
    $("overview").replaceChildren(cards, domains, shards, dropped);
    $("plot").src = "/inspect/plot";
    datastoreLoaded = true;
  } catch (err) {
    showError($("datastore-error"), err.message);
  }
}

// ---- start: the datastore's name and domains ----
(async () => {
  try {
    const stats = await api("/stats");
    $("ds-name").textContent = stats.name;
    document.title = `massiveds: ${stats.name}`;
    $("domains").append(...Object.keys(stats.domains).map((name) => el("label", {}, el("input", {type: "checkbox", value: name}), name)));
  } catch (err) {
    showError($("error"), err.message);
  }
})();
