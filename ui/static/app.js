// holdfast dashboard: polls this node's API with fetch and redraws in
// place. No framework and no build step; see ui/ui.go.
'use strict';

(function () {
  // The chart's series; the colours are repeated in style.css and checked
  // by the browser test (ui/browser_test.go).
  const SERIES = [
    { key: 'offers', color: '#2563eb', width: 2, dash: [] },
    { key: 'expired', color: '#dc2626', width: 2, dash: [6, 4] }, // dashed: it often moves with offers
    { key: 'confirmed', color: '#16a34a', width: 1.5, dash: [] },
  ];
  const TOKEN_KEY = 'holdfast.token';
  const MAX_POINTS = 600;       // chart history kept for the selected pool
  const MAX_POOL_PAGES = 10;    // at most 10 pages of 1000 pools are listed
  const MAX_POOL_ROWS = 50;     // rows shown, hottest first
  const HEAT_RANK = { hot: 2, warm: 1, cold: 0 };

  const params = new URLSearchParams(location.search);
  const POLL_MS = clampInt(params.get('poll_ms'), 1000, 200, 60000);
  // Rates are averaged over this trailing window, so that short polls do
  // not turn every burst into a spike.
  const RATE_WINDOW_MS = Math.max(POLL_MS, 2000);

  const $ = (id) => document.getElementById(id);

  const state = {
    selected: null,      // pool id shown in the drop view
    pool: null,          // its last pool object
    clockOffsetMs: 0,    // cluster time - browser time, from the pool's as_of
    samples: [],         // recent cumulative samples {t, offers, expired, confirmed}
    rates: [],           // [{t, offers, expired, confirmed}] per second
    timer: 0,
    polling: false,
    again: false,        // a poll was asked for while one ran
    paused: false,       // waiting for a token
    pollCount: 0,
    pools: [],
    poolsMore: false,
  };

  function clampInt(s, def, lo, hi) {
    const n = parseInt(s || '', 10);
    if (!Number.isFinite(n)) return def;
    return Math.min(hi, Math.max(lo, n));
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  class HTTPError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // request GETs an API path (relative to /ui/, so a reverse proxy may
  // mount the node under a prefix) with the read token, if any.
  async function request(path) {
    const headers = { Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    const resp = await fetch('../' + path, { headers, cache: 'no-store', credentials: 'omit' });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (resp.status === 401 || resp.status === 403) {
      const err = (body && body.error) || {};
      throw new HTTPError(resp.status, err.code || '', err.message || resp.statusText);
    }
    return { status: resp.status, ok: resp.ok, body };
  }

  async function api(path) {
    const r = await request(path);
    if (!r.ok) {
      const err = (r.body && r.body.error) || {};
      throw new HTTPError(r.status, err.code || '', (err.message || 'request failed') + ' (' + path + ')');
    }
    return r.body;
  }

  // ---- formatting ----

  function fmtInt(n) { return typeof n === 'number' ? n.toLocaleString('en-US') : '–'; }
  function fmtRate(x) { return typeof x === 'number' ? x.toFixed(1) : '–'; }
  function fmtDuration(ms) {
    if (ms < 0) ms = 0;
    const s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const two = (v) => String(v).padStart(2, '0');
    if (h > 0) return h + ':' + two(m) + ':' + two(sec);
    if (m > 0) return m + ':' + two(sec);
    return (ms / 1000).toFixed(1) + ' s';
  }
  function fmtClock(ms) { return new Date(ms).toISOString().substring(11, 19); }
  function text(id, v) { const el = $(id); if (el.textContent !== v) el.textContent = v; }
  function el(tag, cls, txt) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (txt !== undefined) e.textContent = txt;
    return e;
  }

  // ---- cluster ----

  function renderCluster(c, health) {
    text('node-id', c.id || '–');
    text('leader', c.leader || 'none');
    text('term', String(c.term));
    text('log-clock', c.log_clock ? c.log_clock.substring(11, 23) : '–');
    text('commit-index', fmtInt(c.commit_index));
    text('applied-index', fmtInt(c.applied_index));
    text('last-index', fmtInt(c.last_index));
    const pill = $('health');
    if (health.ok) {
      pill.className = 'pill pill-ok';
      pill.textContent = 'healthy';
      pill.title = 'GET /v1/health: 200';
    } else {
      pill.className = 'pill pill-down';
      const msg = (health.body && health.body.error && health.body.error.message) || 'unavailable';
      pill.textContent = 'unavailable';
      pill.title = 'GET /v1/health: ' + health.status + ' ' + msg;
    }
    const tb = $('members');
    tb.replaceChildren();
    for (const m of c.members || []) {
      const tr = el('tr');
      tr.append(el('td', '', m.id), el('td', 'meta', m.raft_addr), el('td', 'meta', m.api_addr || '–'),
        el('td', '', m.suffrage), el('td', '', m.leader ? 'leader' : (m.id === c.id ? c.state.toLowerCase() : 'follower')));
      if (m.leader) tr.className = 'selected';
      tb.append(tr);
    }
  }

  // ---- pools ----

  async function listPools() {
    const all = [];
    let after = '', more = false;
    for (let i = 0; i < MAX_POOL_PAGES; i++) {
      let q = 'v1/pools?limit=1000&consistency=stale';
      if (after) q += '&after=' + encodeURIComponent(after);
      const page = await api(q);
      all.push(...page.pools);
      more = !!page.has_more;
      if (!more || !page.next_after) break;
      after = page.next_after;
    }
    return { pools: all, more };
  }

  function byHeat(a, b) {
    const ha = HEAT_RANK[a.demand.heat] || 0, hb = HEAT_RANK[b.demand.heat] || 0;
    if (ha !== hb) return hb - ha;
    if (a.demand.requests_per_s !== b.demand.requests_per_s) return b.demand.requests_per_s - a.demand.requests_per_s;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  }

  function stockBar(p) {
    const bar = el('div', 'bar');
    const total = Math.max(p.on_hand, p.held + p.sold + p.available, 1);
    for (const [cls, n] of [['b-sold', p.sold], ['b-held', p.held], ['b-avail', p.available]]) {
      const s = el('span', cls);
      s.style.width = (100 * n / total).toFixed(2) + '%';
      bar.append(s);
    }
    bar.title = 'sold ' + p.sold + ', held ' + p.held + ', available ' + p.available + ' of ' + p.on_hand;
    return bar;
  }

  function renderPools() {
    const pools = state.pools.slice().sort(byHeat);
    let shown = pools.slice(0, MAX_POOL_ROWS);
    if (state.selected && !shown.some((p) => p.id === state.selected)) {
      const sel = pools.find((p) => p.id === state.selected);
      if (sel) shown = shown.concat([sel]);
    }
    const tb = $('pool-rows');
    tb.replaceChildren();
    for (const p of shown) {
      const tr = el('tr');
      tr.dataset.pool = p.id;
      if (p.id === state.selected) tr.className = 'selected';
      const heat = el('td'); heat.append(el('span', 'heat heat-' + p.demand.heat, p.demand.heat));
      const bar = el('td'); bar.append(stockBar(p));
      const claim = el('td'); claim.append(el('span', 'claim claim-' + p.claim, p.claim));
      tr.append(el('td', 'pool-id', p.id), el('td', '', p.mode), heat, el('td', 'num', fmtRate(p.demand.requests_per_s)),
        el('td', 'num', fmtInt(p.held)), el('td', 'num', fmtInt(p.sold)), el('td', 'num', fmtInt(p.available)), bar,
        claim, el('td', 'num', fmtInt(p.waitlist.length)));
      tb.append(tr);
    }
    const note = $('pools-more');
    const partial = state.poolsMore ? ' (first ' + fmtInt(pools.length) + ' pools listed)' : '';
    if (pools.length > shown.length || partial) {
      note.hidden = false;
      note.textContent = 'showing the ' + shown.length + ' hottest of ' + fmtInt(pools.length) + partial;
    } else {
      note.hidden = true;
    }
  }

  // ---- the drop view ----

  function select(id) {
    if (state.selected === id) return;
    state.selected = id;
    state.pool = null;
    state.samples = [];
    state.rates = [];
    history.replaceState(null, '', '#pool=' + encodeURIComponent(id));
    renderPools();
    text('drop-pool', id);
    $('drop-body').hidden = false;
    drawChart();
    pollSoon();
  }

  // sample adds a pool's cumulative counters to the history and a rate
  // point: the increase since the oldest sample within RATE_WINDOW_MS.
  function sample(p) {
    const t = Date.parse(p.as_of);
    if (!p.stats || !Number.isFinite(t)) return;
    const cur = { t, offers: p.stats.offers, expired: p.stats.expired, confirmed: p.stats.confirmed };
    const ss = state.samples;
    const last = ss[ss.length - 1];
    if (last && t <= last.t) return; // same as_of: nothing new
    if (last && SERIES.some((s) => cur[s.key] < last[s.key])) {
      ss.length = 0; // counters went back: the pool was recreated or restored
      state.rates = [];
    }
    while (ss.length > 1 && ss[1].t <= t - RATE_WINDOW_MS) ss.shift();
    const base = ss[0];
    ss.push(cur);
    if (!base) return;
    const dt = (t - base.t) / 1000;
    const r = { t };
    for (const s of SERIES) r[s.key] = (cur[s.key] - base[s.key]) / dt;
    state.rates.push(r);
    if (state.rates.length > MAX_POINTS) state.rates.splice(0, state.rates.length - MAX_POINTS);
  }

  function renderDrop(p) {
    state.pool = p;
    const asOf = Date.parse(p.as_of);
    if (Number.isFinite(asOf)) state.clockOffsetMs = asOf - Date.now();
    text('drop-pool', p.id + ' · ' + p.mode + (p.consistency === 'stale' ? ' · stale' : ''));
    const st = p.stats;
    const isDraw = p.mode === 'draw' && p.draw;
    text('stat-entries', isDraw ? fmtInt(st ? st.entries : p.draw.entries) : '–');
    text('stat-winners', isDraw && st ? fmtInt(st.winners) : '–');
    text('stat-waitlist', fmtInt(p.waitlist.length));
    text('stat-offers', st ? fmtInt(st.offers) : '–');
    text('stat-expired', st ? fmtInt(st.expired) : '–');
    text('stat-confirmed', st ? fmtInt(st.confirmed) : '–');
    text('stat-released', st ? fmtInt(st.released) : '–');
    text('stat-stock', fmtInt(p.held) + ' / ' + fmtInt(p.sold) + ' / ' + fmtInt(p.available));
    text('stat-claim', p.claim);
    sample(p);
    renderCountdown();
    drawChart();
  }

  function renderCountdown() {
    const p = state.pool;
    if (!p) return;
    if (p.mode !== 'draw' || !p.draw) {
      text('countdown-label', 'mode');
      text('countdown', p.mode);
      return;
    }
    const now = Date.now() + state.clockOffsetMs;
    const opens = Date.parse(p.draw.opens_at), closes = Date.parse(p.draw.closes_at);
    if (now < opens) {
      text('countdown-label', 'opens in');
      text('countdown', fmtDuration(opens - now));
    } else if (now < closes && !p.draw.closed) {
      text('countdown-label', 'closes in');
      text('countdown', fmtDuration(closes - now));
    } else if (!p.draw.closed) {
      text('countdown-label', 'draw');
      text('countdown', 'drawing…');
    } else {
      text('countdown-label', 'draw closed');
      text('countdown', fmtClock(closes));
    }
  }

  // ---- the chart ----

  function niceStep(max, ticks) {
    const raw = max / ticks;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  function drawChart() {
    const canvas = $('chart');
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 960, cssH = canvas.clientHeight || 280;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    g.font = '11px system-ui, sans-serif';
    const L = 46, R = 12, T = 12, B = 24;
    const w = cssW - L - R, h = cssH - T - B;
    const pts = state.rates;
    canvas.dataset.points = String(pts.length);
    if (pts.length === 0) {
      g.fillStyle = '#616e7c';
      const msg = state.pool && !state.pool.stats ? 'this node does not report pool stats' : 'waiting for data…';
      g.fillText(msg, L + 8, T + 20);
      delete canvas.dataset.rendered;
      return;
    }
    const tMax = pts[pts.length - 1].t;
    const span = Math.min(Math.max(tMax - pts[0].t, 10000), 300000);
    const tMin = tMax - span;
    let yMax = 0;
    for (const p of pts) if (p.t >= tMin) for (const s of SERIES) yMax = Math.max(yMax, p[s.key]);
    const step = niceStep(Math.max(yMax * 1.1, 1), 4);
    yMax = Math.ceil(Math.max(yMax * 1.1, 1) / step) * step;
    const x = (t) => L + (t - tMin) / span * w;
    const y = (v) => T + h - v / yMax * h;

    g.strokeStyle = '#e5e7eb';
    g.fillStyle = '#616e7c';
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let v = 0; v <= yMax + 1e-9; v += step) {
      g.beginPath(); g.moveTo(L, y(v)); g.lineTo(L + w, y(v)); g.stroke();
      g.fillText(step < 1 ? v.toFixed(1) : String(Math.round(v)), L - 6, y(v));
    }
    g.textAlign = 'center';
    g.textBaseline = 'top';
    const tStep = niceStep(span / 1000, 5) * 1000;
    for (let t = Math.ceil(tMin / tStep) * tStep; t <= tMax; t += tStep) {
      g.beginPath(); g.moveTo(x(t), T); g.lineTo(x(t), T + h); g.stroke();
      g.fillText(fmtClock(t), x(t), T + h + 6);
    }
    g.strokeStyle = '#9aa5b1';
    g.beginPath(); g.moveTo(L, T); g.lineTo(L, T + h); g.lineTo(L + w, T + h); g.stroke();

    g.lineJoin = 'round';
    for (const s of SERIES) {
      g.lineWidth = s.width;
      g.setLineDash(s.dash);
      g.strokeStyle = s.color;
      g.fillStyle = s.color;
      g.beginPath();
      let started = false;
      for (const p of pts) {
        if (p.t < tMin) continue;
        if (!started) { g.moveTo(x(p.t), y(p[s.key])); started = true; } else g.lineTo(x(p.t), y(p[s.key]));
      }
      g.stroke();
      g.setLineDash([]);
      for (const p of pts) {
        if (p.t < tMin) continue;
        g.beginPath(); g.arc(x(p.t), y(p[s.key]), 2.5, 0, 2 * Math.PI); g.fill();
      }
    }
    canvas.dataset.rendered = '1';
    text('chart-points', pts.length + ' samples every ' + (POLL_MS / 1000) + ' s, rates over ' + (RATE_WINDOW_MS / 1000) + ' s');
  }

  // ---- polling ----

  function showError(msg) {
    const e = $('error');
    if (msg) { e.textContent = msg; e.hidden = false; } else { e.hidden = true; }
  }

  function askToken(err) {
    state.paused = true;
    $('auth').hidden = false;
    text('auth-message', err.status === 401
      ? 'This node requires a token with the read role (401: ' + err.message + ').'
      : 'The token was refused (403: ' + err.message + '): it needs the read role.');
    $('health').className = 'pill pill-unknown';
    $('health').textContent = 'token needed';
    $('token-input').focus();
  }

  async function poll() {
    if (state.polling) { state.again = true; return; }
    state.polling = true;
    clearTimeout(state.timer);
    try {
      const [cluster, health] = await Promise.all([api('v1/cluster'), request('v1/health')]);
      renderCluster(cluster, health);
      // A long list is refreshed less often than the drop view.
      if (state.pollCount % (state.poolsMore || state.pools.length > 1000 ? 10 : 1) === 0) {
        const r = await listPools();
        state.pools = r.pools;
        state.poolsMore = r.more;
      }
      renderPools();
      if (state.selected) {
        const id = state.selected;
        const p = await api('v1/pools/' + encodeURIComponent(id));
        if (id === state.selected) renderDrop(p);
      }
      state.pollCount++;
      showError('');
      text('updated', 'updated ' + fmtClock(Date.now()) + ' UTC');
    } catch (err) {
      if (err instanceof HTTPError && (err.status === 401 || err.status === 403)) {
        askToken(err);
      } else {
        showError(String(err.message || err));
        if (err instanceof HTTPError && err.status === 404 && state.selected) {
          state.selected = null;
          $('drop-body').hidden = true;
          text('drop-pool', 'select a pool above');
        }
      }
    } finally {
      state.polling = false;
      if (state.again) { state.again = false; state.timer = setTimeout(poll, 0); }
      else if (!state.paused) state.timer = setTimeout(poll, POLL_MS);
    }
  }

  function pollSoon() {
    state.paused = false;
    clearTimeout(state.timer);
    poll();
  }

  // ---- wiring ----

  $('pool-rows').addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr');
    if (tr && tr.dataset.pool) select(tr.dataset.pool);
  });
  $('token-button').addEventListener('click', () => {
    $('auth').hidden = !$('auth').hidden;
    if (!$('auth').hidden) $('token-input').focus();
  });
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token-input').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    $('token-input').value = '';
    $('auth').hidden = true;
    pollSoon();
  });
  $('token-clear').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token-input').value = '';
    pollSoon();
  });
  window.addEventListener('resize', drawChart);
  setInterval(renderCountdown, 200);

  const m = /^#pool=(.+)$/.exec(location.hash);
  if (m) select(decodeURIComponent(m[1])); else poll();
})();
