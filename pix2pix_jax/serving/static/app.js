// pix2pix demo page: a pixel-exact drawing canvas whose content is sent to POST /translate
// after each stroke. Label maps must keep exact palette colours (the model never saw blended
// ones), so strokes are rasterised by hand into ImageData instead of the antialiased 2D API.
'use strict';

const DEBOUNCE_MS = 300;
const MAX_UNDO = 50;

const $ = (id) => document.getElementById(id);
const canvas = $('canvas');
const ctx = canvas.getContext('2d', {willReadFrequently: true});
const output = $('output');
const statusEl = $('status');
const cursor = $('cursor');
const sizeInput = $('brush-size');

const state = {
  info: null,
  kind: 'photo',          // labels | edges | photo
  tool: 'brush',          // brush | rect | eraser
  color: [0, 0, 0],       // pen colour
  background: [255, 255, 255],
  size: 8,
  pixels: null,           // ImageData being edited
  undo: [],
  stroke: null,           // {x, y, startX, startY, base} while the pointer is down
  timer: null,
  inflight: false,
  pending: false,
  translations: 0,
  outputUrl: null,
};

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle('error', isError);
}

// ---------------------------------------------------------------- drawing

function paintColor() {
  return state.tool === 'eraser' ? state.background : state.color;
}

function setPixel(data, x, y, rgb) {
  const i = (y * canvas.width + x) * 4;
  data[i] = rgb[0]; data[i + 1] = rgb[1]; data[i + 2] = rgb[2]; data[i + 3] = 255;
}

// A disc of diameter `size` centred at (cx, cy) in canvas pixels; always covers its centre.
function stamp(cx, cy, size, rgb) {
  const data = state.pixels.data;
  const r = size / 2;
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(canvas.width - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(canvas.height - 1, Math.ceil(cy + r));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      if (dx * dx + dy * dy <= r * r) setPixel(data, x, y, rgb);
    }
  }
  const px = Math.floor(cx), py = Math.floor(cy);
  if (px >= 0 && py >= 0 && px < canvas.width && py < canvas.height) setPixel(data, px, py, rgb);
}

function line(xa, ya, xb, yb, size, rgb) {
  const steps = Math.max(1, Math.ceil(Math.hypot(xb - xa, yb - ya) * 2));
  for (let i = 0; i <= steps; i++) {
    const t = i / steps;
    stamp(xa + (xb - xa) * t, ya + (yb - ya) * t, size, rgb);
  }
}

// Filled for label maps and photos; an outline of the brush's width for edge maps.
function rect(xa, ya, xb, yb, rgb) {
  const clampX = (v) => Math.min(canvas.width - 1, Math.max(0, Math.floor(v)));
  const clampY = (v) => Math.min(canvas.height - 1, Math.max(0, Math.floor(v)));
  const [x0, x1] = [clampX(Math.min(xa, xb)), clampX(Math.max(xa, xb))];
  const [y0, y1] = [clampY(Math.min(ya, yb)), clampY(Math.max(ya, yb))];
  const w = state.kind === 'edges' ? Math.max(1, Math.round(state.size / 2)) : Infinity;
  const data = state.pixels.data;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      if (Math.min(x - x0, x1 - x, y - y0, y1 - y) < w) setPixel(data, x, y, rgb);
    }
  }
}

function commit() {
  ctx.putImageData(state.pixels, 0, 0);
}

function pushUndo() {
  state.undo.push(new ImageData(new Uint8ClampedArray(state.pixels.data), canvas.width, canvas.height));
  if (state.undo.length > MAX_UNDO) state.undo.shift();
}

function fill(rgb) {
  const data = state.pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    data[i] = rgb[0]; data[i + 1] = rgb[1]; data[i + 2] = rgb[2]; data[i + 3] = 255;
  }
  commit();
}

function toCanvas(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width,
          (event.clientY - box.top) * canvas.height / box.height];
}

function moveCursor(event) {
  const box = canvas.getBoundingClientRect();
  const scale = box.width / canvas.width;
  const d = Math.max(4, (state.tool === 'rect' ? 1 : state.size) * scale);
  cursor.hidden = false;
  cursor.classList.toggle('square', state.tool === 'rect');
  Object.assign(cursor.style, {left: `${event.clientX - box.left}px`, top: `${event.clientY - box.top}px`,
                               width: `${d}px`, height: `${d}px`});
}

canvas.addEventListener('pointerdown', (event) => {
  if (!state.pixels || event.button !== 0) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  pushUndo();
  const [x, y] = toCanvas(event);
  state.stroke = {x, y, startX: x, startY: y, base: new Uint8ClampedArray(state.pixels.data)};
  if (state.tool === 'rect') rect(x, y, x, y, state.color);
  else stamp(x, y, state.size, paintColor());
  commit();
});

canvas.addEventListener('pointermove', (event) => {
  moveCursor(event);
  const s = state.stroke;
  if (!s) return;
  const [x, y] = toCanvas(event);
  if (state.tool === 'rect') {
    state.pixels.data.set(s.base);
    rect(s.startX, s.startY, x, y, state.color);
  } else {
    line(s.x, s.y, x, y, state.size, paintColor());
  }
  s.x = x; s.y = y;
  commit();
});

function endStroke() {
  if (!state.stroke) return;
  state.stroke = null;
  schedule();
}
canvas.addEventListener('pointerup', endStroke);
canvas.addEventListener('pointercancel', endStroke);
canvas.addEventListener('pointerleave', () => { cursor.hidden = true; });

function undo() {
  if (!state.undo.length) return;
  state.pixels = state.undo.pop();
  commit();
  schedule();
}

function clearCanvas() {
  pushUndo();
  fill(state.background);
  schedule();
}

async function upload(file) {
  if (!file) return;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    setStatus(`cannot read ${file.name}`, true);
    return;
  }
  pushUndo();
  // Stretched to the square the model was trained on; label maps without blending.
  ctx.fillStyle = `rgb(${state.background.join(',')})`;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingEnabled = state.kind !== 'labels';
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  state.pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
  schedule(0);
}

// ---------------------------------------------------------------- translation

function schedule(delay = DEBOUNCE_MS) {
  clearTimeout(state.timer);
  state.timer = setTimeout(translate, delay);
}

// One request at a time, so outputs never arrive out of order; the last drawing always wins.
async function translate() {
  if (state.inflight) { state.pending = true; return; }
  state.inflight = true;
  setStatus('translating…');
  try {
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
    const start = performance.now();
    const response = await fetch('/translate', {method: 'POST', body: blob,
                                                headers: {'Content-Type': 'image/png'}});
    if (!response.ok) {
      const body = await response.json().catch(() => ({error: response.statusText}));
      setStatus(`error ${response.status}: ${body.error}`, true);
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    output.src = url;
    await output.decode();
    if (state.outputUrl) URL.revokeObjectURL(state.outputUrl);
    state.outputUrl = url;
    $('download').href = url;
    $('download').hidden = false;
    state.translations += 1;
    document.body.dataset.translations = String(state.translations);
    setStatus(`${Math.round(performance.now() - start)} ms`);
  } catch (e) {
    setStatus('the server does not answer', true);
  } finally {
    state.inflight = false;
    if (state.pending) { state.pending = false; translate(); }
  }
}

// ---------------------------------------------------------------- controls

function selectTool(tool) {
  state.tool = tool;
  for (const b of document.querySelectorAll('.tool')) b.classList.toggle('active', b.dataset.tool === tool);
}

function setSize(size) {
  state.size = Math.min(Number(sizeInput.max), Math.max(1, size));
  sizeInput.value = String(state.size);
  $('brush-size-value').textContent = String(state.size);
}

function buildPalette(palette) {
  const box = $('palette');
  box.hidden = false;
  palette.forEach((entry, i) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'swatch';
    b.setAttribute('role', 'radio');
    b.dataset.color = entry.color;
    b.title = entry.color;
    const chip = document.createElement('span');
    chip.className = 'chip';
    chip.style.background = entry.color;
    b.append(chip, entry.name);
    b.addEventListener('click', () => selectColor(i));
    box.append(b);
  });
}

function selectColor(i) {
  const swatches = document.querySelectorAll('.swatch');
  swatches.forEach((b, j) => {
    b.classList.toggle('active', i === j);
    b.setAttribute('aria-checked', String(i === j));
  });
  state.color = hexToRgb(swatches[i].dataset.color);
  if (state.tool === 'eraser') selectTool('brush');
}

document.querySelectorAll('.tool').forEach((b) => b.addEventListener('click', () => selectTool(b.dataset.tool)));
sizeInput.addEventListener('input', () => setSize(Number(sizeInput.value)));
$('undo').addEventListener('click', undo);
$('clear').addEventListener('click', clearCanvas);
$('upload').addEventListener('change', (e) => { upload(e.target.files[0]); e.target.value = ''; });
$('color').addEventListener('input', (e) => { state.color = hexToRgb(e.target.value); });
document.addEventListener('keydown', (e) => {
  if (e.target.tagName === 'INPUT') return;
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z') { e.preventDefault(); undo(); }
  else if (e.key === '[') setSize(state.size - 1);
  else if (e.key === ']') setSize(state.size + 1);
  else if (e.key === 'b') selectTool('brush');
  else if (e.key === 'r') selectTool('rect');
  else if (e.key === 'e') selectTool('eraser');
});

// ---------------------------------------------------------------- start

async function start() {
  let info;
  try {
    info = await (await fetch('/info')).json();
  } catch (e) {
    setStatus('cannot reach the server', true);
    return;
  }
  state.info = info;
  state.kind = info.kind;
  $('dataset').textContent = info.dataset;
  const checkpoint = $('checkpoint');
  checkpoint.textContent = `step ${info.step} · ${info.input_size}×${info.input_size} · `;
  const path = document.createElement('code');
  path.textContent = info.checkpoint;
  checkpoint.append(path);
  document.title = `pix2pix · ${info.dataset} · step ${info.step}`;

  canvas.width = canvas.height = info.input_size;
  sizeInput.max = String(Math.max(4, Math.round(info.input_size / 4)));
  if (info.kind === 'labels' && info.palette.length) {
    buildPalette(info.palette);
    state.background = hexToRgb(info.palette[0].color);
    $('input-hint').textContent = 'paint labels';
    selectColor(Math.min(1, info.palette.length - 1));
    setSize(Math.max(2, Math.round(info.input_size / 16)));
  } else if (info.kind === 'edges') {
    state.color = [0, 0, 0];
    $('input-hint').textContent = 'draw edges';
    setSize(Math.max(1, Math.round(info.input_size / 128)));
  } else {
    $('color-picker').hidden = false;
    state.color = hexToRgb($('color').value);
    setSize(Math.max(2, Math.round(info.input_size / 16)));
  }
  state.pixels = ctx.createImageData(canvas.width, canvas.height);
  fill(state.background);
  document.body.dataset.ready = '1';
  schedule(0);
}

start();
