"""The comparison report's page: one self-contained HTML file (data, images, CSS and JS inline; no network).

The page is a static skeleton plus one JSON block; the script builds every control and card from that JSON with
``textContent`` (never ``innerHTML`` with data), so a case or target name cannot break or script the page. The three
views of the thesis' app (Single target, Multiple targets, Multiple methods) show the same filtered set of maps,
only grouped differently: per (method, target) a grid of cases; per (case, method) a row of targets; per
(case, target) a row of methods.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["page_html"]

_CSS = """
:root { --alpha: 0.6; --card: 300px; }
body { font-family: system-ui, sans-serif; margin: 0; display: flex; min-height: 100vh; color: #222; }
aside { width: 250px; padding: 12px; background: #f3f4f6; border-right: 1px solid #ddd; flex: none; }
aside h3 { margin: 14px 0 4px; font-size: 13px; text-transform: uppercase; color: #555; }
aside label { display: block; font-size: 13px; }
aside input[type=number] { width: 90px; }
main { flex: 1; padding: 12px 16px; min-width: 0; }
nav button { padding: 6px 12px; margin-right: 4px; border: 1px solid #999; background: #fff; cursor: pointer; }
nav button.active { background: #1f4e8c; color: #fff; border-color: #1f4e8c; }
section.group { margin: 14px 0; }
section.group h2 { font-size: 15px; margin: 4px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.card { width: var(--card); box-sizing: border-box; border: 1px solid #ccc; border-radius: 4px; padding: 6px;
        background: #fff; font-size: 12px; }
.card .title { font-weight: 600; }
.card table { border-collapse: collapse; margin: 3px 0; }
.card td { padding: 0 6px 0 0; }
.stack { position: relative; background: #000; line-height: 0; }
.stack img { width: 100%; image-rendering: pixelated; display: block; }
.stack img.over { position: absolute; left: 0; top: 0; opacity: var(--alpha); }
.note { color: #a33; }
.muted { color: #666; }
#summary { margin: 8px 0; }
"""

_JS = r"""
const D = JSON.parse(document.getElementById('report-data').textContent);
let view = 'single';
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; };
function fmt(v) { if (v === null || v === undefined) return '–';
  const a = Math.abs(v); return (a !== 0 && (a >= 1e4 || a < 1e-3)) ? v.toExponential(3) : String(+v.toPrecision(4)); }
function checkboxes(id, cls, values) { const box = document.getElementById(id);
  for (const v of values) { const l = el('label'); const c = el('input'); c.type = 'checkbox'; c.className = cls;
    c.value = v; c.checked = true; c.addEventListener('change', render); l.append(c, ' ' + v); box.append(l); } }
function checked(cls) { return new Set([...document.querySelectorAll('input.' + cls + ':checked')].map(c => c.value)); }
function bound(id) { const v = document.getElementById(id).value.trim(); return v === '' ? null : Number(v); }
function inRange(v, lo, hi) { if (lo === null && hi === null) return true; if (v === null) return false;
  return (lo === null || v >= lo) && (hi === null || v <= hi); }
function filters() { return { targets: checked('target-filter'), methods: checked('method-filter'),
  absLo: bound('abs-delta-min'), absHi: bound('abs-delta-max'), rLo: bound('rdelta-min'), rHi: bound('rdelta-max'),
  yLo: bound('truth-min'), yHi: bound('truth-max'), text: document.getElementById('case-filter').value.trim() }; }
function passes(e, f) { return f.targets.has(e.target) && f.methods.has(e.method)
  && (!f.text || D.cases[e.case].name.includes(f.text))
  && inRange(e.delta === null ? null : Math.abs(e.delta), f.absLo, f.absHi) && inRange(e.rdelta, f.rLo, f.rHi)
  && inRange(e.truth, f.yLo, f.yHi); }
function card(e) { const c = D.cases[e.case]; const k = el('div', 'card');
  Object.assign(k.dataset, { case: c.name, method: e.method, target: e.target });
  k.append(el('div', 'title', c.name), el('div', 'muted', e.method + ' · ' + e.target));
  const t = el('table');
  for (const [n, v] of [['y', e.truth], ['ŷ', e.prediction], ['Δ', e.delta], ['rΔ %', e.rdelta]]) {
    const r = el('tr'); r.append(el('td', '', n), el('td', '', fmt(v))); t.append(r); }
  k.append(t); const s = el('div', 'stack');
  const under = c.underlays[e.target];
  if (under) { const u = el('img', 'under'); u.src = under; u.alt = 'input ' + c.name; s.append(u); }
  const o = el('img', under ? 'over' : 'heat'); o.src = e.img; o.alt = e.method + ' ' + e.target; s.append(o);
  k.append(s);
  k.append(el('div', 'muted', (e.signed ? 'colours ±' + fmt(e.top) : 'colours 0 … ' + fmt(e.top))
    + ' · range ' + fmt(e.vmin) + ' … ' + fmt(e.vmax) + ' · slices at RAS ' + c.points_ras[e.target].join(', ')
    + ' mm'));
  if (e.blank) k.append(el('div', 'note', 'blank map: every value is 0' + (e.note ? ' (' + e.note + ')' : '')));
  else if (e.note) k.append(el('div', 'note', e.note));
  if (e.nonfinite) k.append(el('div', 'note', e.nonfinite + ' NaN/Inf voxel(s), shown as 0'));
  k.title = e.folder; return k; }
function keyOf(e) { const c = D.cases[e.case].name;
  if (view === 'single') return [e.method + ' · ' + e.target];
  if (view === 'targets') return [c + ' · ' + e.method];
  return [c + ' · ' + e.target]; }
function render() { const f = filters(); const shown = D.entries.filter(e => passes(e, f));
  const out = document.getElementById('view'); out.replaceChildren(); const groups = new Map();
  const ordered = view === 'single' ? [...shown].sort((a, b) => a.order_single - b.order_single) : shown;
  for (const e of ordered) { const k = keyOf(e)[0]; if (!groups.has(k)) groups.set(k, []); groups.get(k).push(e); }
  for (const [k, es] of groups) { const g = el('section', 'group'); g.append(el('h2', '', k));
    const grid = el('div', 'grid'); for (const e of es) grid.append(card(e)); g.append(grid); out.append(g); }
  if (!shown.length) out.append(el('p', 'note', 'No map passes the filters.'));
  document.getElementById('summary').textContent = shown.length + ' of ' + D.entries.length + ' maps shown, '
    + groups.size + ' group(s)';
  for (const b of document.querySelectorAll('nav button')) b.classList.toggle('active', b.dataset.view === view); }
document.getElementById('title').textContent = D.title;
document.getElementById('subtitle').textContent = D.cases.length + ' case(s), ' + D.methods.length
  + ' method(s), ' + D.targets.length + ' target(s) · made ' + D.created;
checkboxes('targets', 'target-filter', D.targets); checkboxes('methods', 'method-filter', D.methods);
for (const id of ['abs-delta-min', 'abs-delta-max', 'rdelta-min', 'rdelta-max', 'truth-min', 'truth-max',
                  'case-filter'])
  document.getElementById(id).addEventListener('input', render);
document.getElementById('alpha').addEventListener('input', ev =>
  document.documentElement.style.setProperty('--alpha', ev.target.value));
document.getElementById('card-size').addEventListener('input', ev =>
  document.documentElement.style.setProperty('--card', ev.target.value + 'px'));
for (const b of document.querySelectorAll('nav button'))
  b.addEventListener('click', () => { view = b.dataset.view; render(); });
const cases = document.getElementById('cases');
for (const c of D.cases) { const r = el('tr');
  const at = Object.entries(c.points_ras).map(([t, p]) => t + ': ' + p.join(', ')).join('; ');
  for (const v of [c.name, c.source || '–', (c.sha256 || '–').slice(0, 12), at, c.note || ''])
    r.append(el('td', '', v)); cases.append(r); }
render();
"""

_BODY = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>XAIExplainer comparison report</title><style>{css}</style></head>
<body><aside>
<h3>View</h3><nav><button data-view="single">Single target</button><button data-view="targets">Multiple targets</button>
<button data-view="methods">Multiple methods</button></nav>
<h3>Case name contains</h3><input type="search" id="case-filter">
<h3>Targets</h3><div id="targets"></div>
<h3>Methods</h3><div id="methods"></div>
<h3>|Δ| = |ŷ − y|</h3><label>min <input type="number" step="any" id="abs-delta-min"></label>
<label>max <input type="number" step="any" id="abs-delta-max"></label>
<h3>rΔ = (ŷ/y − 1)·100 %</h3><label>min <input type="number" step="any" id="rdelta-min"></label>
<label>max <input type="number" step="any" id="rdelta-max"></label>
<h3>y (ground truth)</h3><label>min <input type="number" step="any" id="truth-min"></label>
<label>max <input type="number" step="any" id="truth-max"></label>
<h3>Overlay opacity</h3><input type="range" id="alpha" min="0" max="1" step="0.05" value="0.6">
<h3>Card size</h3><input type="range" id="card-size" min="160" max="900" step="20" value="300">
<p class="muted">A bound on y, Δ or rΔ hides maps without ground truth (rΔ also those with y = 0).
Slices: axial, coronal, sagittal through one point per case and target; patient right on the left.</p>
</aside><main><h1 id="title"></h1><div id="subtitle" class="muted"></div>
<details><summary>Cases (input, content hash, slice point per target in RAS mm, as Slicer shows it)</summary>
<table><thead><tr><th>case</th><th>input</th><th>sha256</th><th>slices at (RAS mm)</th><th></th></tr></thead>
<tbody id="cases"></tbody></table></details>
<div id="summary"></div><div id="view"></div></main>
<script type="application/json" id="report-data">{data}</script>
<script>{js}</script></body></html>
"""


def page_html(data: dict[str, Any]) -> str:
    """The whole page for the report data (cases, entries, methods, targets, title, created)."""
    # "<" escaped inside the JSON: no "</script>" in a name can end the data block early
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    return _BODY.format(css=_CSS, data=payload, js=_JS)
