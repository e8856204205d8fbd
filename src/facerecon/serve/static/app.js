// facerecon serve: the page. Plain ES module; the 3-D viewer is the vendored three.js bundle (no CDN).
import {
  Scene, WebGLRenderer, PerspectiveCamera, HemisphereLight, DirectionalLight, Box3, Vector3, Color,
  SRGBColorSpace, NoToneMapping, DoubleSide, GLTFLoader, OrbitControls,
} from './vendor/three-viewer.min.js';

const $ = (id) => document.getElementById(id);
const VIDEO = /\.(mp4|mov|avi|mkv|webm|m4v|mpg|mpeg|wmv|gif)$/i;
const LM_COLORS = { 68: '#3ee05a', 106: '#ff9d2e', 134: '#38c6ff' };
// State the browser test reads: the last payload and the viewer's status.
const state = window.facerecon = { info: null, result: null, face: 0, viewer: { loaded: false, error: null } };

// ---------------------------------------------------------------------------------------------- setup
async function loadInfo() {
  const r = await fetch('/api/info');
  const info = state.info = await r.json();
  $('version').textContent = `v${info.version} · model ${info.model}`;
  const sel = $('method');
  for (const [name, desc] of Object.entries(info.methods)) {
    const o = document.createElement('option');
    o.value = name; o.textContent = name; o.title = desc;
    sel.appendChild(o);
  }
  sel.value = info.default_method;
  $('max_frames').max = info.limits.max_frames;
  showMethod();
}

function showMethod() {
  const info = state.info;
  if (info) $('method-desc').textContent = info.methods[$('method').value] || '';
}

function chosenFiles() { return Array.from($('files').files); }

function showChosen() {
  const files = chosenFiles();
  const isVideo = files.length === 1 && (VIDEO.test(files[0].name) || files[0].type.startsWith('video/'));
  $('video-options').hidden = !isVideo;
  $('go').disabled = files.length === 0;
  const mb = files.reduce((s, f) => s + f.size, 0) / 1e6;
  $('chosen').textContent = files.length === 0 ? 'nothing chosen'
    : `${isVideo ? 'video' : files.length === 1 ? 'photo' : `${files.length} photos of one person`}: `
      + files.map((f) => f.name).join(', ') + ` (${mb.toFixed(1)} MB)`;
}

function setupDrop() {
  const drop = $('drop');
  for (const ev of ['dragenter', 'dragover']) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('over'); });
  for (const ev of ['dragleave', 'drop']) drop.addEventListener(ev, () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    $('files').files = e.dataTransfer.files;
    showChosen();
  });
  drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') $('files').click(); });
  $('files').addEventListener('change', showChosen);
  $('method').addEventListener('change', showMethod);
}

// ---------------------------------------------------------------------------------------------- request
function showError(msg) {
  $('error').textContent = msg;
  $('error').hidden = !msg;
}

async function submit(e) {
  e.preventDefault();
  const files = chosenFiles();
  if (!files.length) return;
  const fd = new FormData();
  for (const f of files) fd.append('files', f, f.name);
  fd.append('method', $('method').value);
  fd.append('photometric', $('photometric').checked ? '1' : '0');
  if (!$('video-options').hidden) {
    fd.append('max_frames', $('max_frames').value);
    fd.append('stride', $('stride').value);
  }
  showError('');
  $('go').disabled = true;
  const t0 = performance.now();
  const tick = setInterval(() => { $('status').textContent = `working… ${((performance.now() - t0) / 1000).toFixed(0)} s`; }, 250);
  $('status').textContent = 'uploading…';
  try {
    const r = await fetch('/api/reconstruct', { method: 'POST', body: fd });
    let body;
    try { body = await r.json(); } catch { body = { error: `the server answered ${r.status} ${r.statusText}` }; }
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    state.result = body;
    state.elapsed = (performance.now() - t0) / 1000;
    $('status').textContent = `done in ${state.elapsed.toFixed(1)} s`;
    render(body);
  } catch (err) {
    $('status').textContent = '';
    showError(err.message || String(err));
  } finally {
    clearInterval(tick);
    $('go').disabled = chosenFiles().length === 0;
  }
}

// ---------------------------------------------------------------------------------------------- result
function render(res) {
  $('result').hidden = false;
  const what = { photo: 'one photo', set: `a set of ${res.faces.length} photo(s)`, video: `a video, ${res.frames?.length ?? 0} frame(s)` }[res.kind];
  $('summary').textContent = `${what} · method ${res.method} · reconstructed in ${res.seconds.reconstruct.toFixed(2)} s, `
    + `outputs written in ${res.seconds.outputs.toFixed(2)} s`;
  $('zip').href = res.zip;
  $('skipped').hidden = !res.skipped.length;
  $('skipped').textContent = res.skipped.length ? `skipped: ${res.skipped.join('; ')}` : '';
  const picker = $('face');
  picker.innerHTML = '';
  res.faces.forEach((f, i) => {
    const o = document.createElement('option');
    o.value = i;
    o.textContent = res.kind === 'video' ? `${i === 0 ? 'first' : 'last'} frame (${f.stem})` : f.source;
    picker.appendChild(o);
  });
  $('face-picker').hidden = res.faces.length < 2;
  picker.onchange = () => { showFace(res.faces[+picker.value]); if ($('downloads').dataset.done === '0') showDownloads(state.face.downloads, null, true); };
  showFace(res.faces[0]);
  renderVideo(res);
  pollDownloads(res);
}

function showFace(face) {
  state.face = face;
  drawOverlay(face);
  drawLandmarks(face);
  viewer.load(face.glb);
  fillNumbers('pose', [
    ...['yaw', 'pitch', 'roll'].map((k) => [k, face.pose_deg[k], '°', 2]),
    ...['x', 'y', 'z'].map((k, i) => [`t${k}`, face.translation_mm[i], 'mm', 1]),
  ]);
  fillNumbers('times', Object.entries(face.times).map(([k, v]) => [k, v, 's', 3]));
  drawBlendshapes(face);
  const masks = $('masks');
  masks.innerHTML = '';
  if (!face.masks.length) {
    masks.innerHTML = '<span class="muted small">none: this method/model gives no part masks yet</span>';
  }
  for (const m of face.masks) {
    const fig = document.createElement('figure');
    fig.innerHTML = `<canvas title="${m.name}"></canvas><figcaption class="small">${m.name}</figcaption>`;
    colourMask(fig.querySelector('canvas'), m);
    masks.appendChild(fig);
  }
  showDownloads(face.downloads);
}

// The page's own formats come with the answer; the other downloads are written just after it.
async function pollDownloads(res) {
  const dl = $('downloads'), zip = $('zip');
  dl.dataset.done = '0';
  zip.classList.add('disabled');
  while (state.result === res) {
    let st;
    try {
      const r = await fetch(res.status);
      st = await r.json();
      if (!r.ok) throw new Error(st.error || `HTTP ${r.status}`);
    } catch (err) {
      showDownloads(state.face.downloads, `cannot list the downloads: ${err.message || err}`);
      dl.dataset.done = 'error';
      return;
    }
    st.downloads.forEach((d, i) => { if (res.faces[i]) res.faces[i].downloads = d; });
    if (state.result !== res) return;
    showDownloads(state.face.downloads, st.done ? st.error : null, !st.done);
    if (st.done) {
      dl.dataset.done = '1';
      zip.classList.remove('disabled');
      return;
    }
    await new Promise((ok) => setTimeout(ok, 400));
  }
}

function showDownloads(list, error = null, pending = false) {
  const dl = $('downloads');
  dl.innerHTML = '';
  for (const d of list) {
    const a = document.createElement('a');
    a.className = 'button';
    a.href = d.url;
    a.download = d.name;
    a.textContent = d.name;
    a.title = `${d.format}: ${d.description} (${(d.bytes / 1024).toFixed(0)} KB)`;
    a.dataset.format = d.format;
    dl.appendChild(a);
  }
  if (pending || error) {
    const note = document.createElement('span');
    note.className = error ? 'error small' : 'muted small';
    note.textContent = error || 'writing the other files…';
    dl.appendChild(note);
  }
}

function fillNumbers(id, rows) {
  const t = $(id);
  t.innerHTML = '';
  for (const [key, value, unit, digits] of rows) {
    const tr = t.insertRow();
    tr.innerHTML = '<th></th><td></td><td class="muted"></td>';
    tr.cells[0].textContent = key;
    tr.cells[1].textContent = Number(value).toFixed(digits);
    tr.cells[1].dataset.key = key;
    tr.cells[1].dataset.value = String(value);
    tr.cells[2].textContent = unit;
  }
}

function drawBlendshapes(face) {
  const box = $('blendshapes');
  box.innerHTML = '';
  if (!face.blendshapes) {
    box.innerHTML = '<span class="muted small">this model has no ARKit blendshapes</span>';
    return;
  }
  const only = $('nonzero').checked;
  for (const [name, w] of Object.entries(face.blendshapes)) {
    if (only && w <= 0.01) continue;
    const row = document.createElement('div');
    row.className = 'bar';
    row.innerHTML = '<span></span><span class="track"><span class="fill"></span></span><span class="v"></span>';
    row.children[0].textContent = name;
    row.querySelector('.fill').style.width = `${Math.max(0, Math.min(1, w)) * 100}%`;
    row.children[2].textContent = w.toFixed(3);
    row.children[2].dataset.key = name;
    row.children[2].dataset.value = String(w);
    box.appendChild(row);
  }
}

// The face's part of the photo (a square around its landmarks), or the whole photo: [x0, y0, w, h] px.
function region(face) {
  const [W, H] = face.image_size;
  const pts = Object.values(face.landmarks).flat();
  if ($('whole').checked || !pts.length) return [0, 0, W, H];
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const cx = (Math.min(...xs) + Math.max(...xs)) / 2, cy = (Math.min(...ys) + Math.max(...ys)) / 2;
  const side = Math.min(W, H, 1.8 * Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys)));
  const clamp = (v, hi) => Math.max(0, Math.min(hi, v));
  return [clamp(cx - side / 2, W - side), clamp(cy - side / 2, H - side), side, side];
}

// Size `canvas` for a region and return the photo-px -> canvas-px map.
function fit(canvas, [x0, y0, w, h]) {
  const s = 720 / Math.max(w, h);
  canvas.width = Math.round(w * s);
  canvas.height = Math.round(h * s);
  return { s, x: (x) => (x - x0) * s, y: (y) => (y - y0) * s };
}

function drawOverlay(face) {
  const canvas = $('overlay');
  canvas.dataset.loaded = '0';
  const r = region(face);
  const m = fit(canvas, r);
  const ctx = canvas.getContext('2d');
  if (!face.overlay) return;
  const img = new Image();
  img.onload = () => {
    ctx.drawImage(img, r[0], r[1], r[2], r[3], 0, 0, canvas.width, canvas.height);
    canvas.dataset.loaded = '1';
  };
  img.src = face.overlay;
  return m;
}

// 3DDFA_V3's 8 parts: right eye, left eye, right brow, left brow, nose, upper lip, lower lip, skin.
const PART_COLORS = [[0, 200, 80], [0, 120, 40], [140, 70, 40], [100, 40, 20], [150, 60, 200], [250, 140, 60],
                     [220, 40, 40], [240, 210, 170]];

// The mask PNGs hold codes, not colours: `seg` one bit per part (all parts, hidden ones too),
// `seg_visible` the front-most part + 1. Paint each pixel with its part's colour (for `seg`, the
// highest set bit, so the small parts show over the skin).
function colourMask(canvas, m) {
  const img = new Image();
  img.onload = () => {
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < d.data.length; i += 4) {
      const v = d.data[i];
      let k = -1;
      if (m.format === 'seg') { for (let b = 0; b < 8; b++) if ((v >> b) & 1) k = b; } else k = v - 1;
      const c = k >= 0 && k < 8 ? PART_COLORS[k] : [255, 255, 255];
      d.data[i] = c[0]; d.data[i + 1] = c[1]; d.data[i + 2] = c[2]; d.data[i + 3] = 255;
    }
    ctx.putImageData(d, 0, 0);
    canvas.dataset.loaded = '1';
  };
  img.src = m.url;
}

function drawLandmarks(face) {
  const canvas = $('landmarks');
  const sets = Object.keys(face.landmarks);
  const boxes = $('lm-sets');
  boxes.innerHTML = '';
  const on = {};
  for (const s of sets) {
    on[s] = s === sets[0];  // the 68 first; the denser sets on request (drawn together they hide each other)
    const l = document.createElement('label');
    l.innerHTML = `<input type="checkbox"${on[s] ? ' checked' : ''}> <span style="color:${LM_COLORS[s] || '#e040fb'}">●</span> ${s}`;
    l.querySelector('input').onchange = (e) => { on[s] = e.target.checked; paint(); };
    boxes.appendChild(l);
  }
  const reg = region(face);
  const m = fit(canvas, reg);
  const img = new Image();
  const ctx = canvas.getContext('2d');
  function paint() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (img.complete && img.naturalWidth) ctx.drawImage(img, ...reg, 0, 0, canvas.width, canvas.height);
    const r = Math.max(2, Math.min(5, canvas.width / 160));
    for (const s of sets) {
      if (!on[s]) continue;
      ctx.fillStyle = LM_COLORS[s] || '#e040fb';
      ctx.strokeStyle = 'rgba(0,0,0,0.6)';
      for (const [x, y] of face.landmarks[s]) {
        ctx.beginPath();
        ctx.arc(m.x(x), m.y(y), r, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      }
    }
  }
  img.onload = paint;
  if (face.photo) img.src = face.photo; else paint();
}

// ---------------------------------------------------------------------------------------------- video
function renderVideo(res) {
  $('video').hidden = res.kind !== 'video';
  if (res.kind !== 'video') return;
  $('frames-csv').href = res.frames_csv;
  const frames = res.frames;
  const names = frames.length && frames[0].blendshapes ? Object.keys(frames[0].blendshapes) : [];
  // The blendshapes that move most over the clip are worth a column each.
  const spread = (n) => Math.max(...frames.map((f) => f.blendshapes[n])) - Math.min(...frames.map((f) => f.blendshapes[n]));
  const top = names.map((n) => [n, spread(n)]).sort((a, b) => b[1] - a[1]).slice(0, 4).map((x) => x[0]);
  const t = $('frames');
  t.innerHTML = '';
  const head = t.createTHead().insertRow();
  for (const c of ['frame', 'yaw °', 'pitch °', 'roll °', 'tz mm', ...top]) {
    const th = document.createElement('th');
    th.textContent = c;
    head.appendChild(th);
  }
  const body = t.createTBody();
  for (const f of frames) {
    const tr = body.insertRow();
    const vals = [f.frame, f.pose_deg.yaw.toFixed(2), f.pose_deg.pitch.toFixed(2), f.pose_deg.roll.toFixed(2),
      f.translation_mm[2].toFixed(1), ...top.map((n) => f.blendshapes[n].toFixed(3))];
    for (const v of vals) tr.insertCell().textContent = v;
  }
  drawChart(frames);
}

function drawChart(frames) {
  const c = $('pose-chart');
  c.width = c.clientWidth || 800;
  const ctx = c.getContext('2d');
  const W = c.width, H = c.height, pad = 28;
  ctx.clearRect(0, 0, W, H);
  const series = [['yaw', '#2b6cb0'], ['pitch', '#c05621'], ['roll', '#2f855a']];
  const all = frames.flatMap((f) => series.map(([k]) => f.pose_deg[k]));
  const lo = Math.min(-5, ...all), hi = Math.max(5, ...all);
  const x = (i) => pad + (W - 2 * pad) * (frames.length < 2 ? 0.5 : i / (frames.length - 1));
  const y = (v) => H - pad - (H - 2 * pad) * (v - lo) / (hi - lo);
  ctx.strokeStyle = '#ccc';
  ctx.beginPath(); ctx.moveTo(pad, y(0)); ctx.lineTo(W - pad, y(0)); ctx.stroke();
  ctx.fillStyle = '#666';
  ctx.font = '11px sans-serif';
  ctx.fillText(`${hi.toFixed(0)}°`, 2, y(hi) + 4);
  ctx.fillText(`${lo.toFixed(0)}°`, 2, y(lo));
  series.forEach(([k, col], j) => {
    ctx.strokeStyle = col;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    frames.forEach((f, i) => (i ? ctx.lineTo(x(i), y(f.pose_deg[k])) : ctx.moveTo(x(i), y(f.pose_deg[k]))));
    ctx.stroke();
    ctx.fillStyle = col;
    ctx.fillText(k, W - pad - 120 + j * 42, 12);
  });
  ctx.fillStyle = '#666';
  ctx.fillText(`frame ${frames[0]?.frame ?? ''}`, pad, H - 8);
  ctx.fillText(`frame ${frames.at(-1)?.frame ?? ''}`, W - pad - 60, H - 8);
}

// ---------------------------------------------------------------------------------------------- 3-D viewer
const viewer = (() => {
  const el = $('viewer');
  let renderer = null, scene, camera, controls, current = null, home = null;
  function init() {
    renderer = new WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    renderer.outputColorSpace = SRGBColorSpace;
    renderer.toneMapping = NoToneMapping;
    renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    el.appendChild(renderer.domElement);
    scene = new Scene();
    scene.background = new Color(0xdfe3ea);
    camera = new PerspectiveCamera(30, 1, 1, 5000);
    scene.add(new HemisphereLight(0xffffff, 0x667788, 2.2));
    const key = new DirectionalLight(0xffffff, 1.6);
    key.position.set(0.3, 0.4, 1);
    camera.add(key);  // a head light: the face stays lit while it turns
    scene.add(camera);
    controls = new OrbitControls(camera, renderer.domElement);
    controls.addEventListener('change', draw);
    new ResizeObserver(resize).observe(el);
    resize();
  }
  function resize() {
    const w = el.clientWidth || 400, h = el.clientHeight || w;
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
    draw();
  }
  function draw() { if (renderer) renderer.render(scene, camera); }
  function frame(obj) {
    const box = new Box3().setFromObject(obj);
    const c = box.getCenter(new Vector3()), size = box.getSize(new Vector3()).length();
    const dist = size / (2 * Math.tan((camera.fov * Math.PI) / 360)) * 0.9;
    home = { target: c.clone(), position: c.clone().add(new Vector3(0, 0, dist)) };
    camera.near = dist / 50; camera.far = dist * 50;
    camera.updateProjectionMatrix();
    reset();
  }
  function reset() {
    if (!home) return;
    controls.target.copy(home.target);
    camera.position.copy(home.position);
    controls.update();
    draw();
  }
  function load(url) {
    if (!renderer) init();
    el.dataset.loaded = '0';
    state.viewer = { loaded: false, error: null, url };
    if (current) { scene.remove(current); current = null; }
    if (!url) { draw(); return; }
    new GLTFLoader().load(url, (gltf) => {
      current = gltf.scene;
      current.traverse((o) => {
        if (o.isMesh && o.material) {
          o.material.side = DoubleSide;
          if ('metalness' in o.material) { o.material.metalness = 0; o.material.roughness = 0.75; }
        }
      });
      scene.add(current);
      frame(current);
      requestAnimationFrame(() => {
        draw();
        state.viewer.loaded = true;
        el.dataset.loaded = '1';
      });
    }, undefined, (err) => {
      state.viewer.error = String(err);
      el.dataset.loaded = 'error';
    });
  }
  $('reset-view').onclick = reset;
  return { load };
})();

setupDrop();
$('form').addEventListener('submit', submit);
$('nonzero').addEventListener('change', () => { if (state.face) drawBlendshapes(state.face); });
$('whole').addEventListener('change', () => { if (state.face) { drawOverlay(state.face); drawLandmarks(state.face); } });
loadInfo().catch((e) => showError(`cannot reach the server: ${e.message}`));
