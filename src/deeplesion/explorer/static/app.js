// DeepLesion explorer front end: plain JavaScript, no build step, no network beyond this server.
// Views live in the URL hash: #/lesions?filters, #/lesion/ROW?window=..&overlay=..&slice=..,
// #/patient/P, #/map?filters. Every view is built from the JSON API (see the README).
"use strict";

const FILTER_KEYS = ["split", "type", "min_long_mm", "max_long_mm", "min_interval_mm",
  "max_interval_mm", "patient", "noisy", "q", "tag", "sort"];
const PAGE = 100;
let META = null;
let COLOURS = null;
let cleanup = null;  // the current view's teardown (listeners on window)

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path) {
  const r = await fetch(path);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function fmt(x, digits = 1) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/lesions";
  const [path, query] = raw.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

function go(path, params) {
  const q = params ? params.toString() : "";
  location.hash = q ? `${path}?${q}` : path;
}

function filterParams(params) {
  const out = new URLSearchParams();
  for (const k of FILTER_KEYS) for (const v of params.getAll(k)) if (v !== "") out.append(k, v);
  return out;
}

function swatch(type) {
  const s = h("span", { class: "swatch" });
  if (COLOURS && COLOURS[type]) s.style.background = COLOURS[type];
  return s;
}

function lesionLink(item, text) {
  return h("a", { href: `#/lesion/${item.row_index}` }, text || item.file_name);
}

function setNav(which) {
  for (const id of ["nav-lesions", "nav-map"]) {
    document.getElementById(id).classList.toggle("active", id === `nav-${which}`);
  }
}

// ------------------------------------------------------------------ lesion list

async function showList(params) {
  setNav("lesions");
  const view = document.getElementById("view");
  const fp = filterParams(params);
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const query = new URLSearchParams(fp);
  query.set("offset", offset);
  query.set("limit", PAGE);
  let data;
  try {
    data = await api(`/api/lesions?${query}`);
  } catch (e) {
    view.replaceChildren(filterForm(params, "map"), h("p", { class: "bad", id: "error" }, e.message));
    return;
  }
  const sort = params.get("sort") || "row_index";
  const sortKey = sort.replace(/^-/, "");
  const desc = sort.startsWith("-");
  const columns = [
    ["file_name", "file name"], ["patient", "patient", "num"], [null, "study", "num"],
    [null, "series", "num"], [null, "key slice", "num"], ["type", "type"],
    ["long_mm", "long mm", "num"], ["short_mm", "short mm", "num"],
    ["interval_mm", "interval mm", "num"], ["split", "split"], [null, "noisy"],
  ];
  const head = h("tr", {}, columns.map(([key, label, cls]) => {
    const th = h("th", { class: [cls, key ? "sortable" : "", key === sortKey ? "sorted" : "",
      key === sortKey && desc ? "desc" : ""].filter(Boolean).join(" ") }, label);
    if (key) th.addEventListener("click", () => {
      const p = filterParams(params);
      p.set("sort", key === sortKey && !desc ? `-${key}` : key);
      go("/lesions", p);
    });
    return th;
  }));
  const rows = data.items.map((it) => h("tr", {
    class: "link", "data-row": it.row_index, onclick: () => go(`/lesion/${it.row_index}`),
  },
  h("td", {}, lesionLink(it)), h("td", { class: "num" }, it.patient),
  h("td", { class: "num" }, it.study), h("td", { class: "num" }, it.series),
  h("td", { class: "num" }, it.key_slice), h("td", {}, swatch(it.type), it.type),
  h("td", { class: "num" }, fmt(it.long_mm)), h("td", { class: "num" }, fmt(it.short_mm)),
  h("td", { class: "num" }, fmt(it.interval_mm, 1)), h("td", {}, it.split),
  h("td", {}, it.noisy ? "noisy" : "")));
  const pageParams = (o) => { const p = filterParams(params); if (o) p.set("offset", o); return p; };
  const last = Math.min(offset + data.items.length, data.total);
  const pager = h("div", { class: "pager" },
    h("button", { id: "prev", disabled: offset <= 0,
      onclick: () => go("/lesions", pageParams(Math.max(0, offset - PAGE))) }, "‹ previous"),
    h("span", {}, data.total ? `${offset + 1}–${last} of ${data.total}` : "no lesions"),
    h("button", { id: "next", disabled: last >= data.total,
      onclick: () => go("/lesions", pageParams(offset + PAGE)) }, "next ›"));
  const c = data.counts;
  const counts = h("div", { class: "counts" },
    h("span", { id: "count" }, `${data.total.toLocaleString("en")}`),
    ` of ${META.rows.toLocaleString("en")} lesions · ${c.patients.toLocaleString("en")} patient${c.patients === 1 ? "" : "s"} · `,
    h("a", { href: `#/map${fp.toString() ? "?" + fp : ""}` }, "show on the body map"),
    h("div", { class: "chips" },
      Object.entries(c.type).map(([t, n]) => h("span", { class: "chip" }, swatch(t), `${t} ${n}`)),
      Object.entries(c.split).map(([s, n]) => h("span", { class: "chip" }, `${s} ${n}`))));
  view.replaceChildren(filterForm(params, "lesions"), counts,
    h("table", { id: "lesions" }, h("thead", {}, head), h("tbody", {}, rows)), pager);
}

function filterForm(params, target) {
  const val = (k) => params.get(k) || "";
  const sel = (name, options) => h("select", { name },
    options.map(([v, label]) => h("option", { value: v, selected: val(name) === v }, label)));
  const num = (name, placeholder) => h("input", { type: "number", name, min: "0", step: "any",
    value: val(name), placeholder });
  const form = h("form", { class: "filters", id: "filters" },
    h("label", {}, "split", sel("split", [["", "all"], ["train", "train"], ["val", "val"], ["test", "test"]])),
    h("label", {}, "type", sel("type", [["", "all"], ...META.types.map((t) => [t, t])])),
    h("label", {}, "long diameter mm", h("span", {}, num("min_long_mm", "min"), " ", num("max_long_mm", "max"))),
    h("label", {}, "slice interval mm", h("span", {}, num("min_interval_mm", "min"), " ", num("max_interval_mm", "max"))),
    h("label", {}, "patient", h("input", { type: "number", name: "patient", min: "0", value: val("patient") })),
    h("label", {}, "noisy", sel("noisy", [["", "all"], ["1", "noisy only"], ["0", "not noisy"]])),
    META.tags ? h("label", {}, "LesaNet tags (comma)", h("input", { name: "tag", value: params.getAll("tag").join(", "),
      placeholder: "e.g. liver, mass" })) : null,
    h("label", {}, "file name contains", h("input", { name: "q", value: val("q"), placeholder: "000001_01" })),
    h("button", { type: "submit" }, "apply"),
    h("button", { type: "button", onclick: () => go(`/${target}`) }, "clear"));
  const apply = () => {
    const p = new URLSearchParams();
    for (const el of form.elements) {
      if (!el.name || el.value === "") continue;
      if (el.name === "tag") el.value.split(",").map((t) => t.trim()).filter(Boolean).forEach((t) => p.append("tag", t));
      else p.set(el.name, el.value);
    }
    if (params.get("sort")) p.set("sort", params.get("sort"));
    go(`/${target}`, p);
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  form.addEventListener("change", (e) => { if (e.target.tagName === "SELECT") apply(); });
  return form;
}

// ------------------------------------------------------------------ lesion view

async function showLesion(row, params) {
  setNav(null);
  const view = document.getElementById("view");
  const d = await api(`/api/lesion/${row}`);
  const L = d.lesion;
  const state = {
    index: Math.max(0, d.slices.findIndex((s) => s.key)),
    window: params.get("window") || "dicom",
    overlay: params.get("overlay") !== "0",
    zoom: 1, panX: 0, panY: 0, hu: new Map(), pending: false, queued: null,
  };
  const wantSlice = parseInt(params.get("slice") || "", 10);
  const found = d.slices.findIndex((s) => s.number === wantSlice);
  if (found >= 0) state.index = found;

  const img = h("img", { id: "slice", alt: "slice", draggable: "false" });
  const missing = h("div", { class: "missing", id: "missing", hidden: true });
  const viewport = h("div", { class: "viewport", id: "viewport", tabindex: "0" }, img, missing);
  const slider = h("input", { type: "range", id: "slider", min: 0, max: d.slices.length - 1, value: state.index });
  const sliceLabel = h("span", { id: "slicelabel" });
  const huLabel = h("span", { id: "hulabel", class: "muted" }, "HU: move the pointer over the image");
  const wlLabel = h("span", { id: "wllabel", class: "muted" });
  const overlayBox = h("input", { type: "checkbox", id: "overlay", checked: state.overlay });

  const presets = [["dicom", "DICOM"], ["lung", "lung"], ["mediastinum", "mediastinum"],
    ["soft-tissue", "soft tissue"], ["liver", "liver"], ["bone", "bone"]];
  const buttons = presets.map(([key, label]) => h("button", { "data-window": key,
    onclick: () => { state.window = key; refresh(); } }, label));

  function windowRange() {
    if (state.window === "dicom") return L.dicom_window_hu;
    if (META.windows[state.window]) return META.windows[state.window];
    return state.window.split(",").map(Number);
  }
  function sliceUrl(s) {
    const q = new URLSearchParams({ window: state.window, overlay: state.overlay ? "1" : "0" });
    return `/api/slice/${s.name}?${q}`;
  }
  function applyTransform() {
    img.style.transform = `translate(${state.panX}px, ${state.panY}px) scale(${state.zoom})`;
    img.classList.toggle("pixelated", state.zoom > 1.5);
  }
  function updateHash() {
    const p = new URLSearchParams();
    if (state.window !== "dicom") p.set("window", state.window);
    if (!state.overlay) p.set("overlay", "0");
    const s = d.slices[state.index];
    if (!s.key) p.set("slice", s.number);
    history.replaceState(null, "", `#/lesion/${row}${p.toString() ? "?" + p : ""}`);
  }
  function load(url) {
    // one request in flight; the newest wanted image wins (smooth window dragging)
    if (state.pending) { state.queued = url; return; }
    state.pending = true;
    const pre = new Image();
    pre.onload = () => {
      img.src = url; state.pending = false;
      img.dataset.loaded = url;
      if (state.queued && state.queued !== url) { const q = state.queued; state.queued = null; load(q); }
      else state.queued = null;
    };
    pre.onerror = async () => {
      // never leave the previous slice on screen in place of this one
      state.pending = false; state.queued = null;
      img.hidden = true; missing.hidden = false;
      const why = await whyNot(url);
      missing.textContent = why === "image missing" ? "this slice is missing under ROOT" : "this slice could not be read";
    };
    pre.src = url;
  }
  function refresh() {
    const s = d.slices[state.index];
    slider.value = state.index;
    const offset = s.offset_mm === 0 ? "0.0" : (s.offset_mm > 0 ? "+" : "") + s.offset_mm.toFixed(1);
    sliceLabel.textContent = `slice ${s.number}${s.key ? " (key)" : ""} · ${offset} mm from the key slice · ` +
      `${state.index + 1}/${d.slices.length}`;
    const [lo, hi] = windowRange();
    wlLabel.textContent = `window ${Math.round(lo)}…${Math.round(hi)} HU (level ${Math.round((lo + hi) / 2)}, width ${Math.round(hi - lo)})`;
    for (const b of buttons) b.classList.toggle("on", b.dataset.window === state.window);
    if (s.present) {
      missing.hidden = true; img.hidden = false;
      load(sliceUrl(s));
    } else {
      img.hidden = true; missing.hidden = false;
      missing.textContent = META.images ? `slice ${s.name} is missing under ROOT` : "images are missing: no slices under ROOT";
    }
    updateHash();
  }
  function step(delta) {
    const next = Math.min(d.slices.length - 1, Math.max(0, state.index + delta));
    if (next !== state.index) { state.index = next; refresh(); }
  }
  function zoomBy(f, cx, cy) {
    const r = viewport.getBoundingClientRect();
    const px = cx === undefined ? r.width / 2 : cx, py = cy === undefined ? r.height / 2 : cy;
    const z = Math.min(16, Math.max(1, state.zoom * f));
    state.panX = px - (px - state.panX) * (z / state.zoom);
    state.panY = py - (py - state.panY) * (z / state.zoom);
    state.zoom = z;
    if (z === 1) { state.panX = 0; state.panY = 0; }
    applyTransform();
  }
  async function showHU(ev) {
    const s = d.slices[state.index];
    if (!s.present || img.hidden) return;
    // the image is drawn with object-fit: contain inside the (transformed) element box
    const r = img.getBoundingClientRect();
    const [rows, cols] = L.image_size;
    const scale = Math.min(r.width / cols, r.height / rows);
    const left = r.left + (r.width - cols * scale) / 2, top = r.top + (r.height - rows * scale) / 2;
    const col = Math.floor((ev.clientX - left) / scale);
    const rowPx = Math.floor((ev.clientY - top) / scale);
    if (col < 0 || rowPx < 0 || col >= cols || rowPx >= rows) {
      huLabel.textContent = "HU: outside the image"; return;
    }
    let entry = state.hu.get(s.name);
    if (!entry) {
      entry = fetch(`/api/hu/${s.name}`).then(async (r2) => ({
        cols: parseInt(r2.headers.get("x-cols"), 10), values: new Int16Array(await r2.arrayBuffer()) }));
      state.hu.set(s.name, entry);
    }
    const hu = await entry;
    const v = hu.values[rowPx * hu.cols + col];
    huLabel.textContent = `x ${col + 1}, y ${rowPx + 1} (DL_info px): ${v} HU`;
  }

  // pointer: drag = window level/width, shift-drag or right-drag = pan, wheel = slices,
  // ctrl-wheel = zoom
  let drag = null;
  viewport.addEventListener("contextmenu", (e) => e.preventDefault());
  viewport.addEventListener("pointerdown", (e) => {
    viewport.focus();
    const [lo, hi] = windowRange();
    drag = { x: e.clientX, y: e.clientY, pan: e.shiftKey || e.button === 2 || e.button === 1,
      level: (lo + hi) / 2, width: hi - lo, panX: state.panX, panY: state.panY };
    viewport.setPointerCapture(e.pointerId);
  });
  viewport.addEventListener("pointermove", (e) => {
    showHU(e);
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (drag.pan) {
      state.panX = drag.panX + dx; state.panY = drag.panY + dy; applyTransform();
    } else if (Math.abs(dx) + Math.abs(dy) > 2) {
      const width = Math.max(1, drag.width + dx * 4);
      const level = drag.level + dy * 2;
      state.window = `${Math.round(level - width / 2)},${Math.round(level + width / 2)}`;
      refresh();
    }
  });
  viewport.addEventListener("pointerup", () => { drag = null; });
  viewport.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey || e.metaKey) {
      const r = viewport.getBoundingClientRect();
      zoomBy(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
    } else step(e.deltaY > 0 ? 1 : -1);
  }, { passive: false });
  slider.addEventListener("input", () => { state.index = parseInt(slider.value, 10); refresh(); });
  overlayBox.addEventListener("change", () => { state.overlay = overlayBox.checked; refresh(); });
  const onKey = (e) => {
    if (e.target.tagName === "INPUT" && e.target.type !== "range" && e.target.type !== "checkbox") return;
    const keys = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 5, PageUp: -5 };
    if (e.key in keys) { e.preventDefault(); step(keys[e.key]); }
    else if (e.key === "Home") { state.index = Math.max(0, d.slices.findIndex((s) => s.key)); refresh(); }
    else if (e.key === "o") { overlayBox.checked = !overlayBox.checked; state.overlay = overlayBox.checked; refresh(); }
    else if (e.key === "+" || e.key === "=") zoomBy(1.25);
    else if (e.key === "-") zoomBy(0.8);
  };
  window.addEventListener("keydown", onKey);
  cleanup = () => window.removeEventListener("keydown", onKey);

  const m = L.measurement;
  const toolbar = h("div", { class: "toolbar" }, buttons, h("span", { class: "sep" }),
    h("label", {}, overlayBox, " marks"), h("span", { class: "sep" }),
    h("button", { id: "zoomout", onclick: () => zoomBy(0.8) }, "−"),
    h("button", { id: "zoomin", onclick: () => zoomBy(1.25) }, "+"),
    h("button", { onclick: () => { state.zoom = 1; state.panX = 0; state.panY = 0; applyTransform(); } }, "fit"));
  const left = h("section", {}, toolbar, viewport, slider,
    h("div", { class: "sliceinfo" }, sliceLabel, wlLabel), h("div", {}, huLabel),
    h("div", { class: "kbd" }, "wheel or ↑↓ ←→: slices · drag: level/width · shift-drag: pan · ctrl-wheel or +/−: zoom · o: marks"));

  const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
  const facts = h("dl", { class: "facts", id: "facts" },
    fact("file name", L.file_name),
    fact("patient", h("a", { href: `#/patient/${L.patient}`, id: "patient-link" }, `patient ${L.patient}`)),
    fact("study / series", `${L.study} / ${L.series}`),
    fact("type", [swatch(L.type), L.type]),
    fact("split", `${L.split}${L.noisy ? " · possibly noisy" : ""}`),
    fact("long axis", `${fmt(m.long_px)} px · ${fmt(m.long_mm)} mm`),
    fact("short axis", `${fmt(m.short_px)} px · ${fmt(m.short_mm)} mm`),
    fact("reported (px)", `${fmt(m.long_px_reported, 2)} × ${fmt(m.short_px_reported, 2)}`),
    fact("ellipse area", `${fmt(m.ellipse_area_mm2, 0)} mm²`),
    fact("spacing", `${L.spacing_mm.map((v) => fmt(v, 3)).join(" × ")} mm (x, y, slice)`),
    fact("slice range", `${L.slice_range[0]}–${L.slice_range[1]} (key ${L.key_slice})`),
    fact("location (norm.)", L.location_norm.map((v) => fmt(v, 3)).join(", ")),
    fact("DICOM window", `${L.dicom_window_hu[0]}…${L.dicom_window_hu[1]} HU`),
    fact("patient", `${L.sex}, ${L.age_years === null ? "age unknown" : L.age_years + " y"}`),
    L.tags.length ? fact("LesaNet tags", L.tags.join(", ")) : null);
  const others = d.same_slice.length
    ? h("ul", { id: "same-slice" }, d.same_slice.map((o) => h("li", {}, lesionLink(o, `${o.type} ${fmt(o.long_mm)} × ${fmt(o.short_mm)} mm`))))
    : h("p", { class: "muted" }, "none");
  const track = d.track;
  const trackBox = h("div", { id: "track" },
    track.observations.length > 1 || track.is_new
      ? h("table", {}, h("tr", {}, h("th", {}, "study"), h("th", { class: "num" }, "long mm"), h("th", { class: "num" }, "short mm"), h("th", { class: "num" }, "link confidence")),
        track.observations.map((o) => h("tr", {}, h("td", {}, o.row_index === L.row_index ? `${o.study} (this)` : h("a", { href: `#/lesion/${o.row_index}` }, o.study)),
          h("td", { class: "num" }, fmt(o.long_mm)), h("td", { class: "num" }, fmt(o.short_mm)), h("td", { class: "num" }, fmt(o.confidence, 2)))))
      : h("p", { class: "muted" }, "seen in one study only"),
    h("p", {}, h("a", { href: `#/patient/${L.patient}` }, `patient ${L.patient}: studies, tracks and responses ›`)));
  const similarBox = h("div", { class: "strip", id: "similar" }, h("span", { class: "muted" }, "finding similar lesions…"));
  const right = h("section", {}, h("h2", {}, `${L.type} lesion · ${L.file_name}`), facts,
    h("h3", {}, "other lesions on this slice"), others,
    h("h3", {}, `growth track ${track.track_id}${track.is_new ? " (new lesion)" : ""}`), trackBox,
    h("h3", {}, "similar lesions (other patients)"), similarBox);
  if (!d.key_present) right.prepend(h("p", { class: "bad" }, META.images ? "The key slice is missing under ROOT." : "Images are missing: this root holds no slices."));
  view.replaceChildren(h("div", { class: "lesion" }, left, right));
  applyTransform();
  refresh();
  viewport.focus();
  api(`/api/similar/${row}?k=8`).then((s) => {
    similarBox.replaceChildren(...s.items.map((it) => tile(it, `${it.type} ${fmt(it.long_mm)} mm · ${fmt(it.similarity, 2)}`)));
    if (!s.items.length) similarBox.replaceChildren(h("span", { class: "muted" }, "none"));
  }).catch((e) => similarBox.replaceChildren(h("span", { class: "bad" }, e.message)));
}

function tile(item, caption) {
  // never a bare black box: "loading…" until the crop arrives, then the crop, or why not
  const src = `/api/crop/${item.row_index}`;
  let pic = h("div", { class: "noimg" }, "image missing");
  if (item.image) {
    const waiting = h("span", { class: "loading" }, "loading…");
    const failed = () => whyNot(src).then((text) => pic.replaceWith(h("div", { class: "noimg" }, text)));
    pic = h("div", { class: "pic" }, waiting,
      h("img", { src, alt: item.file_name, loading: "lazy", onload: () => waiting.remove(), onerror: failed }));
  }
  return h("a", { class: "tile", href: `#/lesion/${item.row_index}`, title: item.file_name }, pic, h("span", {}, caption));
}

async function whyNot(url) {
  // an <img> does not tell why it failed: ask once more for the status
  try {
    const r = await fetch(url);
    return r.status === 404 ? "image missing" : "image unreadable";
  } catch {
    return "image missing";
  }
}

// ------------------------------------------------------------------ patient view

async function showPatient(p) {
  setNav(null);
  const view = document.getElementById("view");
  const d = await api(`/api/patient/${p}`);
  const byRow = new Map();
  for (const s of d.studies) for (const it of s.lesions) byRow.set(it.row_index, it);
  const studies = h("div", { id: "studies" }, d.studies.map((s) => h("div", { class: "study", "data-study": s.study },
    h("strong", {}, `study ${s.study}`), h("span", { class: "muted" }, ` · ${s.lesions.length} lesion(s)`),
    h("ul", {}, s.lesions.map((it) => h("li", {}, lesionLink(it), ` · series ${it.series} · ${it.type} · ${fmt(it.long_mm)} × ${fmt(it.short_mm)} mm`))))));
  const responses = d.responses.length
    ? h("table", { id: "responses" }, h("tr", {}, h("th", {}, "follow-up study"), h("th", {}, "RECIST 1.1"), h("th", { class: "num" }, "sum of long diameters mm"), h("th", {}, "why")),
      d.responses.map((r) => h("tr", {}, h("td", {}, r.study), h("td", { class: `resp-${r.category}` }, r.category),
        h("td", { class: "num" }, fmt(r.sld_mm)), h("td", {}, r.reason))))
    : h("p", { class: "muted" }, "no follow-up study");
  const tracks = h("div", { id: "tracks" }, d.tracks.map((t) => h("div", { class: "track" },
    h("div", {}, h("strong", {}, `track ${t.track_id}`), t.is_new ? " (new lesion)" : "",
      h("span", { class: "muted" }, ` · change ${fmt(t.change_mm)} mm`)),
    h("div", { class: "strip" }, t.observations.map((o) => {
      const it = byRow.get(o.row_index);
      return tile({ ...it, image: o.image }, `study ${o.study} · ${fmt(o.long_mm)} mm`);
    })))));
  view.replaceChildren(h("h2", {}, `Patient ${d.patient}`, h("span", { class: "muted" }, ` · ${d.sex} · ${d.studies.length} studies`)),
    h("h3", {}, "studies in order"), studies, h("h3", {}, "responses (RECIST 1.1, as deeplesion growth)"), responses,
    h("h3", {}, "tracks: the key slices of one lesion over time"), tracks);
}

// ------------------------------------------------------------------ body map

async function showMap(params) {
  setNav("map");
  const view = document.getElementById("view");
  const fp = filterParams(params);
  const d = await api(`/api/bodymap?${fp}`);
  COLOURS = d.colours;
  const W = 440, H = 760, pad = 20;
  const canvas = h("canvas", { class: "bodymap", id: "bodymap", width: W, height: H });
  const tip = h("div", { id: "maptip", class: "muted" }, "click a point to open its lesion");
  const ctx = canvas.getContext("2d");
  const px = (x) => pad + x * (W - 2 * pad), pz = (z) => pad + z * (H - 2 * pad);
  ctx.strokeStyle = "#232a33";
  for (let i = 1; i < 10; i++) {  // grid every 0.1
    ctx.beginPath(); ctx.moveTo(px(i / 10), pad); ctx.lineTo(px(i / 10), H - pad); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(pad, pz(i / 10)); ctx.lineTo(W - pad, pz(i / 10)); ctx.stroke();
  }
  ctx.strokeStyle = "#2f3640"; ctx.strokeRect(pad, pad, W - 2 * pad, H - 2 * pad);
  ctx.fillStyle = "#8b95a1"; ctx.font = "11px sans-serif";
  ctx.fillText("head", W / 2 - 12, 13); ctx.fillText("feet", W / 2 - 10, H - 5);
  ctx.fillText("patient's right", pad + 2, pad + 12);
  ctx.fillText("left", W - pad - 24, pad + 12);
  const r = d.points.length > 5000 ? 1.5 : d.points.length > 500 ? 2.5 : 4;
  ctx.globalAlpha = d.points.length > 5000 ? 0.5 : 0.85;
  const counts = {};
  for (const unlabelledPass of [true, false]) {  // grey (unlabelled) points beneath
    for (const [, x, z, type] of d.points) {
      if ((type === "unlabelled") !== unlabelledPass) continue;
      counts[type] = (counts[type] || 0) + 1;
      ctx.fillStyle = d.colours[type] || "#ccc";
      ctx.beginPath(); ctx.arc(px(x), pz(z), r, 0, 2 * Math.PI); ctx.fill();
    }
  }
  ctx.globalAlpha = 1;
  const nearest = (ev) => {
    const b = canvas.getBoundingClientRect();
    const cx = (ev.clientX - b.left) * (W / b.width), cy = (ev.clientY - b.top) * (H / b.height);
    let best = null, bestD = 64;
    for (const p of d.points) {
      const dd = (px(p[1]) - cx) ** 2 + (pz(p[2]) - cy) ** 2;
      if (dd < bestD) { bestD = dd; best = p; }
    }
    return best;
  };
  canvas.addEventListener("mousemove", (ev) => {
    const p = nearest(ev);
    tip.textContent = p ? `row ${p[0]} · ${p[3]} · x ${fmt(p[1], 2)}, z ${fmt(p[2], 2)}` : "click a point to open its lesion";
  });
  canvas.addEventListener("click", (ev) => { const p = nearest(ev); if (p) go(`/lesion/${p[0]}`); });
  const legend = h("div", {}, h("p", {}, h("span", { id: "map-count" }, d.total.toLocaleString("en")), " lesions in the current filter. ",
    h("a", { href: `#/lesions${fp.toString() ? "?" + fp : ""}` }, "list them")),
  h("p", { class: "muted" }, "x: normalised left–right position (image left = patient's right); z: normalised body height, head at the top (DL_info Normalized_lesion_location)."),
  h("ul", { id: "map-legend" }, Object.entries(d.colours).map(([t, c]) => {
    const s = h("span", { class: "swatch" }); s.style.background = c;
    return h("li", {}, s, `${t} (${counts[t] || 0})`);
  })), tip);
  view.replaceChildren(filterForm(params, "map"), h("div", { class: "mapwrap" }, canvas, legend));
}

// ------------------------------------------------------------------ router

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const { parts, params } = parseHash();
  const view = document.getElementById("view");
  try {
    if (parts[0] === "lesion" && parts[1]) await showLesion(parts[1], params);
    else if (parts[0] === "patient" && parts[1]) await showPatient(parts[1]);
    else if (parts[0] === "map") await showMap(params);
    else await showList(params);
  } catch (e) {
    view.replaceChildren(h("p", { class: "bad", id: "error" }, e.message), h("p", {}, h("a", { href: "#/lesions" }, "back to the list")));
  }
  document.body.dataset.ready = location.hash || "#/lesions";
}

async function start() {
  META = await api("/api/meta");
  COLOURS = META.colours;
  document.getElementById("status").textContent = `${META.rows.toLocaleString("en")} lesions · ${META.csv}`;
  if (!META.images) {
    const n = document.getElementById("notice");
    n.hidden = false;
    n.textContent = `Images are missing: no slices under ${META.root}. The table can still be browsed.`;
  }
  window.addEventListener("hashchange", route);
  await route();
}

start();
