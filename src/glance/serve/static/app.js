// glance explorer: talks only to this server's JSON API (docs/api.md).
"use strict";

const state = { info: null, imageId: null, interventions: {}, pending: null, inflight: false, seq: 0 };
window.glanceExplorer = { requests: 0, lastLatencyMs: null, latencies: [] };

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const res = await fetch(path, opts);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function showError(id, message) {
  const e = document.getElementById(id);
  e.textContent = message || "";
  e.hidden = !message;
}

function buildSliders() {
  const box = document.getElementById("sliders");
  box.replaceChildren();
  for (const node of state.info.nodes) {
    const row = el("div", { class: "slider", "data-node": node.name, "data-kind": node.kind });
    const label = el("label", { for: `s-${node.name}` }, node.name);
    const entry = (state.info.atlas || []).find((a) => a.node === node.name);
    if (entry) label.title = entry.description;  // what the node is, from the concept atlas
    if (node.partly_drawn) {  // the fit measured the twin to draw this much of an asked change
      label.append(el("span", {
        class: "drawn",
        title: "the twin draws this fraction of an asked change (measured when the run was fitted)",
      }, ` (drawn ${Math.round(node.drawn * 100)}%)`));
    }
    // A discrete node (a flag, a category) moves between its levels only.
    const lv = node.levels;
    const gap = lv ? Math.min(...lv.slice(1).map((v, i) => v - lv[i])) : 0.05;
    const input = el("input", {
      type: "range", id: `s-${node.name}`, min: lv ? lv[0] : node.min,
      max: lv ? lv[lv.length - 1] : node.max, step: String(gap), value: "0",
      "data-node": node.name, "data-discrete": lv ? "1" : "0",
    });
    const value = el("output", { id: `v-${node.name}` }, "0.00");
    input.addEventListener("input", () => {
      state.interventions[node.name] = parseFloat(input.value);
      row.classList.add("intervened");
      value.textContent = parseFloat(input.value).toFixed(2);
      request();
    });
    row.append(label, input, value);
    box.append(row);
  }
}

function buildProbabilities() {
  const box = document.getElementById("probabilities");
  box.replaceChildren();
  state.info.classes.forEach((name, k) => {
    const row = el("div", { class: "prob", "data-class": String(k) });
    const bar = el("div", { class: "bar" });
    bar.append(el("div", { class: "fill", id: `p-${k}` }));
    row.append(el("span", { class: "name" }, name), bar, el("span", { class: "pv", id: `pv-${k}` }, "—"));
    box.append(row);
  });
}

function render(result) {
  state.last = result;  // to re-highlight the graph when the full / readable view switches
  document.getElementById("counterfactual").src = `data:image/png;base64,${result.image}`;
  result.probabilities.forEach((p, k) => {
    const fill = document.getElementById(`p-${k}`);
    if (!fill) return;
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.parentElement.parentElement.classList.toggle("top", k === result.prediction);
    document.getElementById(`pv-${k}`).textContent = p.toFixed(3);
  });
  for (const [name, v] of Object.entries(result.nodes)) {
    if (name in state.interventions) continue;
    const input = document.getElementById(`s-${name}`);
    if (input) input.value = String(v);
    const out = document.getElementById(`v-${name}`);
    if (out) out.textContent = v.toFixed(2);
  }
  highlight(result);
}

function highlight(result) {
  const changed = Object.assign({}, result.changed || {});
  const pf = result.factual_probabilities || [];
  result.probabilities.forEach((p, k) => {
    const d = p - (pf[k] ?? p);
    if (Math.abs(d) > 1e-3) {
      changed[`output_${state.info.classes[k]}`] = d * 3;
      changed.outputs = Math.max(changed.outputs || 0, Math.abs(d) * 3);  // grouped outputs
    }
  });
  const max = Math.max(1e-9, ...Object.values(changed).map(Math.abs));
  document.querySelectorAll("#graph g.node").forEach((g) => {
    const name = g.getAttribute("data-node");
    const ellipse = g.querySelector("ellipse");
    if (name in changed) {
      g.classList.add("changed");
      ellipse.setAttribute("stroke", "#e08214");
      ellipse.setAttribute("stroke-width", (1.5 + 3.5 * Math.abs(changed[name]) / max).toFixed(2));
    } else {
      g.classList.remove("changed");
      ellipse.setAttribute("stroke", "#555");
      ellipse.setAttribute("stroke-width", "1");
    }
  });
}

// One request in flight; a slider moved meanwhile sends only its latest value afterwards.
function request() {
  state.pending = { image_id: state.imageId, interventions: Object.assign({}, state.interventions) };
  if (!state.inflight) flush();
}

async function flush() {
  if (!state.pending) return;
  const body = state.pending;
  state.pending = null;
  state.inflight = true;
  const t0 = performance.now();
  try {
    const result = await api("/api/counterfactual", body);
    if (body.image_id === state.imageId) render(result);
    const ms = performance.now() - t0;
    window.glanceExplorer.requests += 1;
    window.glanceExplorer.lastLatencyMs = ms;
    window.glanceExplorer.latencies.push(ms);
    document.getElementById("latency").textContent = `(${ms.toFixed(0)} ms)`;
    showError("cf-error", "");
  } catch (err) {
    showError("cf-error", err.message);
  } finally {
    state.inflight = false;
    if (state.pending) flush();
  }
}

function resetSliders() {
  state.interventions = {};
  document.querySelectorAll("#sliders .slider").forEach((r) => r.classList.remove("intervened"));
  request();
}

function selectImage(id, src) {
  state.imageId = id;
  document.getElementById("original").src = src;
  document.querySelectorAll("#thumbs img").forEach((t) =>
    t.classList.toggle("selected", t.getAttribute("data-id") === id));
  resetSliders();
}

async function upload(file) {
  showError("upload-error", "");
  showError("upload-note", "");
  if (file.size > state.info.max_upload_bytes) {
    showError("upload-error", `file too large: ${file.size} bytes (limit ${state.info.max_upload_bytes})`);
    return;
  }
  const dataUrl = await new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
  try {
    const res = await api("/api/upload", { image: dataUrl });
    if (res.resized_from) {
      // The classifier sees the fitted image: show that one, and say so.
      const [w, h] = res.resized_from;
      showError("upload-note", `resized from ${w}×${h} to ${res.size[0]}×${res.size[1]} (centre crop)`);
      selectImage(res.image_id, `/api/images/${res.image_id}.png`);
    } else {
      selectImage(res.image_id, dataUrl);
    }
  } catch (err) {
    showError("upload-error", err.message);
  }
}

// The readable graph (the outputs and their neighbourhood) by default; the full one on request.
function showGraph(full) {
  const svg = full ? state.info.graph_svg : (state.info.graph_readable_svg || state.info.graph_svg);
  const box = document.getElementById("graph");
  if (svg) box.innerHTML = svg;
  else box.textContent = "No causal graph in this run (run glance graph RUN).";
  if (state.last) highlight(state.last);
}

function buildAtlas() {
  const box = document.getElementById("atlas");
  box.replaceChildren();
  const entries = state.info.atlas || [];
  if (!entries.length) {
    box.textContent = "No concept atlas in this run (run glance concepts RUN).";
    return;
  }
  for (const a of entries) {
    const item = el("div", { class: "atlas-entry", id: `atlas-${a.node}`, "data-node": a.node });
    item.append(el("h3", {}, a.node + (a.moves_output ? " · moves the output" : "")));
    item.append(el("p", { class: "description" }, a.description));
    if (a.strip) item.append(el("img", { src: a.strip, alt: `traversal strip of ${a.node}` }));
    box.append(item);
  }
}

async function init() {
  state.info = await api("/api/info");
  document.getElementById("run-name").textContent = state.info.name;
  document.getElementById("image-source").textContent = state.info.image_source;
  showGraph(false);
  document.getElementById("full-graph").addEventListener("change", (e) => showGraph(e.target.checked));
  document.getElementById("graph-story").textContent = state.info.graph_story || "";
  buildAtlas();
  if (!state.info.propagates) {
    document.getElementById("propagation-note").textContent =
      "No causal model for this run: moving a node changes only that node.";
  }
  buildSliders();
  buildProbabilities();
  document.getElementById("reset").addEventListener("click", resetSliders);
  document.getElementById("upload").addEventListener("change", (e) => {
    if (e.target.files.length) upload(e.target.files[0]);
  });
  const { images } = await api("/api/images");
  const thumbs = document.getElementById("thumbs");
  for (const img of images) {
    const src = `/api/images/${encodeURIComponent(img.id)}.png`;
    const t = el("img", { src, "data-id": img.id, alt: `image ${img.id}`, title: img.label === null ? img.id : `label ${img.label}` });
    t.addEventListener("click", () => selectImage(img.id, src));
    thumbs.append(t);
  }
  if (images.length) selectImage(images[0].id, `/api/images/${encodeURIComponent(images[0].id)}.png`);
  document.body.setAttribute("data-ready", "1");
}

init().catch((err) => showError("cf-error", `could not load the explorer: ${err.message}`));
