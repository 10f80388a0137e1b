/** The dashboard page (one file: markup, style, script; uPlot comes from /uplot.js). */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tsvs dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/uplot.css">
<style>
  body { font: 13px system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d232b; }
  header { background: #1d232b; color: #fff; padding: 8px 16px; display: flex; gap: 24px; align-items: baseline; }
  header h1 { font-size: 16px; margin: 0; }
  header span { opacity: .8; }
  main { padding: 12px 16px; display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
  section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 8px 10px; }
  section h2 { font-size: 13px; margin: 0 0 6px; color: #47515e; }
  .wide { grid-column: 1 / -1; }
  .bridge { display: inline-block; vertical-align: top; margin: 4px 16px 4px 0; padding: 6px 10px; border: 1px solid #c9d0d8; border-radius: 6px; }
  .bridge b { display: block; margin-bottom: 4px; }
  .port { display: inline-block; margin: 2px 4px; padding: 3px 8px; border-radius: 12px; border: 1px solid; font-size: 12px; }
  .port[data-link=up] { border-color: #2a9d4b; background: #e7f6ec; }
  .port[data-link=down] { border-color: #c0392b; background: #fbeaea; }
  table { border-collapse: collapse; width: 100%; font: 12px ui-monospace, monospace; }
  th { text-align: left; cursor: pointer; background: #eef1f4; padding: 3px 6px; user-select: none; }
  td { padding: 2px 6px; border-top: 1px solid #eef1f4; white-space: nowrap; }
  td.n, th.n { text-align: right; }
  input { font: inherit; padding: 2px 6px; width: 260px; }
</style>
</head>
<body>
<header><h1>tsvs</h1><span id="status">connecting...</span><span id="summary"></span></header>
<main>
  <section><h2>rx packets/s per port</h2><div id="chart-rx"></div></section>
  <section><h2>tx packets/s per port</h2><div id="chart-tx"></div></section>
  <section><h2>drops/s per port</h2><div id="chart-drops"></div></section>
  <section><h2>PMD busy %</h2><div id="chart-busy"></div></section>
  <section><h2>datapath flows and upcalls/s</h2><div id="chart-flows"></div></section>
  <section><h2>PMD threads</h2><table id="pmds"><thead><tr><th>pmd</th><th class="n">busy %</th><th class="n">ns/pkt</th><th class="n">rx pps</th><th class="n">EMC %</th><th class="n">megaflow %</th><th class="n">upcalls/s</th><th class="n">flows</th></tr></thead><tbody></tbody></table></section>
  <section class="wide"><h2>bridges and ports</h2><div id="topology"></div></section>
  <section class="wide"><h2>datapath flows <input id="filter" placeholder="filter (match or actions)"></h2>
    <table id="flows"><thead><tr><th data-k="pmd" class="n">pmd</th><th data-k="pps" class="n">pps</th><th data-k="bps" class="n">bps</th><th data-k="packets" class="n">packets</th><th data-k="match">match</th><th data-k="actions">actions</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script src="/uplot.js"></script>
<script>
(() => {
  const KEEP = 120;
  const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
  const state = { samples: 0, last: null, charts: {}, sortKey: 'pps', sortDir: -1 };
  window.tsvsDash = state;
  const si = (n) => {
    if (!isFinite(n) || n === 0) return '0';
    const u = ['', 'k', 'M', 'G', 'T']; let i = 0; let v = Math.abs(n);
    while (v >= 999.5 && i < u.length - 1) { v /= 1000; i++; }
    return (v >= 100 || i === 0 ? Math.round(v) : v.toFixed(v >= 10 ? 1 : 2)) + u[i];
  };
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

  /** A chart whose series (by name) may change: rebuilt when the set changes, history kept per name. */
  function liveChart(id, unit) {
    const el = document.getElementById(id);
    const hist = new Map();
    const times = [];
    let plot = null; let names = '';
    return {
      get data() { return plot ? plot.data : null; },
      hist,
      push(t, values) {
        times.push(t);
        for (const [k, v] of Object.entries(values)) { if (!hist.has(k)) hist.set(k, new Array(times.length - 1).fill(null)); }
        for (const [k, arr] of hist) arr.push(k in values ? values[k] : null);
        if (times.length > KEEP) { times.shift(); for (const arr of hist.values()) arr.shift(); }
        const keys = [...hist.keys()].filter((k) => k in values);
        const data = [times.slice(), ...keys.map((k) => hist.get(k).slice())];
        const sig = keys.join('|');
        if (!plot || sig !== names) {
          if (plot) plot.destroy();
          names = sig;
          plot = new uPlot({
            width: Math.max(360, el.clientWidth || 400), height: 180,
            scales: { x: { time: true } },
            axes: [{}, { values: (u, vals) => vals.map((v) => si(v) + unit), size: 60 }],
            series: [{}, ...keys.map((k, i) => ({ label: k, stroke: COLORS[i % COLORS.length], width: 1.5, value: (u, v) => v == null ? '-' : si(v) + unit }))],
          }, data, el);
        } else plot.setData(data);
      },
    };
  }
  const charts = state.charts;
  charts.rx = liveChart('chart-rx', '');
  charts.tx = liveChart('chart-tx', '');
  charts.drops = liveChart('chart-drops', '');
  charts.busy = liveChart('chart-busy', '%');
  charts.flows = liveChart('chart-flows', '');

  function topology(bridges) {
    const el = document.getElementById('topology');
    el.innerHTML = bridges.length === 0 ? '<i>no bridges</i>' : bridges.map((b) =>
      '<div class="bridge" data-bridge="' + esc(b.name) + '"><b>' + esc(b.name) + '</b>' +
      (b.ports.length === 0 ? '<i>no ports</i>' : b.ports.map((p) =>
        '<span class="port" data-port="' + esc(p.name) + '" data-link="' + esc(p.link) + '" title="' + esc(p.type + ', ofport ' + p.ofport + ', pmd ' + p.pmd + (p.status ? ', ' + p.status : '') + (p.error ? ', ERROR: ' + p.error : '')) + '">' +
        esc(p.name) + ' <small>' + esc(p.type) + ' ' + esc(p.link) + '</small></span>').join('')) + '</div>').join('');
  }

  function flowTable(flows) {
    const q = document.getElementById('filter').value.trim().toLowerCase();
    const k = state.sortKey; const dir = state.sortDir;
    const rows = flows.filter((f) => !q || (f.match + ' ' + f.actions).toLowerCase().includes(q))
      .sort((a, b) => (typeof a[k] === 'number' ? a[k] - b[k] : String(a[k]).localeCompare(String(b[k]))) * dir);
    document.querySelector('#flows tbody').innerHTML = rows.slice(0, 500).map((f) =>
      '<tr><td class="n">' + f.pmd + '</td><td class="n">' + si(f.pps) + '</td><td class="n">' + si(f.bps) + '</td><td class="n">' + f.packets +
      '</td><td>' + esc(f.match) + '</td><td>' + esc(f.actions) + '</td></tr>').join('');
  }
  document.querySelectorAll('#flows th').forEach((th) => th.addEventListener('click', () => {
    const k = th.dataset.k;
    state.sortDir = state.sortKey === k ? -state.sortDir : (k === 'match' || k === 'actions' ? 1 : -1);
    state.sortKey = k;
    if (state.last) flowTable(state.last.rates.flows);
  }));
  document.getElementById('filter').addEventListener('input', () => { if (state.last) flowTable(state.last.rates.flows); });

  function update(m) {
    state.samples++;
    state.last = m;
    const r = m.rates;
    const t = m.time / 1000;
    const by = (f) => Object.fromEntries(r.ports.map((p) => [p.name, f(p)]));
    charts.rx.push(t, by((p) => p.rxPps));
    charts.tx.push(t, by((p) => p.txPps));
    charts.drops.push(t, by((p) => p.dropPps));
    charts.busy.push(t, Object.fromEntries(r.pmds.map((p) => ['pmd ' + p.id, p.busyPct])));
    charts.flows.push(t, { 'datapath flows': r.totalFlows, 'upcalls/s': r.pmds.reduce((a, p) => a + p.upcallPps, 0) });
    document.querySelector('#pmds tbody').innerHTML = r.pmds.map((p) =>
      '<tr><td>' + p.id + (p.cpu === null ? '' : ' (cpu ' + p.cpu + ')') + '</td><td class="n">' + p.busyPct.toFixed(1) + '</td><td class="n">' + p.nsPerPacket.toFixed(0) +
      '</td><td class="n">' + si(p.rxPps) + '</td><td class="n">' + p.emcPct.toFixed(1) + '</td><td class="n">' + p.megaflowPct.toFixed(1) +
      '</td><td class="n">' + si(p.upcallPps) + '</td><td class="n">' + p.flows + '</td></tr>').join('');
    topology(m.bridges);
    flowTable(r.flows);
    document.getElementById('summary').textContent =
      'buffers in use ' + (r.pool.count - r.pool.free) + '/' + r.pool.count + ' - ' + r.totalFlows + ' datapath flows - ' + new Date(m.time).toISOString().slice(11, 19) + ' UTC';
  }

  const es = new EventSource('/events');
  es.onopen = () => { document.getElementById('status').textContent = 'live'; };
  es.onerror = () => { document.getElementById('status').textContent = 'reconnecting...'; };
  es.onmessage = (e) => update(JSON.parse(e.data));
})();
</script>
</body>
</html>
`;
